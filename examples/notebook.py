# %% [markdown]
# # JobCloud from a notebook
#
# Submit jobs to the deployments on a Prefect server, wait for them, read their outputs and
# logs, and chain train -> predict through the job store. Needs a server with the deployments
# (`jobcloud deploy`) and a worker (`prefect worker start --pool cpu`); `PREFECT_API_URL`,
# `JOBCLOUD_STORAGE` and `JOBCLOUD_CONFIG` as for the `jobcloud` command.
# Each `# %%` is a cell: open it as a notebook with Jupytext, or run it as a script
# (tests/e2e/test_server_jobs.py does).

# %%
import tempfile
from pathlib import Path

from jobcloud.blocks.store.factory import store_from_settings
from jobcloud.deployments.jobs.client import submit

here = Path(__file__).resolve().parent / "linefit"
store = store_from_settings()
for name in ("config.yaml", "points.csv", "query.csv"):
    store.write_bytes(f"notebook/{name}", (here / name).read_bytes())

# %% Train: the handle comes back at once; wait() blocks until the job ends.
train = submit("linefit/v1/train", config="notebook/config.yaml", data=["notebook/points.csv"], priority=3)
print("submitted", train.id)
print("state:", train.wait())
assert train.state == "Completed", train.result.message
print("outputs:", train.outputs())

# %% Its log: the flow's messages and the container's own output.
print(train.logs())

# %% Predict with the trained model: an artifact of one job is an input of the next.
predict = submit("linefit/v1/predict", data=["notebook/query.csv"], artifacts=[f"jobs/{train.id}/artifact"])
assert predict.wait() == "Completed", predict.result.message
folder = Path(tempfile.mkdtemp())
predict.outputs(folder)
print((folder / "output" / "predictions.csv").read_text())

"""torchfit: a small PyTorch regression model, trained in one job and used in the next.

`python -m torchfit.train` and `python -m torchfit.predict`; see images/torchfit/README.md.
"""

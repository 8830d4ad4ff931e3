"""Images: building JobCloud's images, wrapping any image for in-container runs, the GPU probe.

- `build`: builds the recipes of images/ (shipped as `jobcloud.images`) with whatever engine answers.
- `wrap`, `wrap_venv`: `jobcloud images wrap` (wrap_venv runs inside the image, never imported).
- `gpu_check`: whether the image a GPU job runs can use CUDA (`jobcloud check`).

May import: `jobcloud.blocks`, `jobcloud.flows`, `jobcloud.deployments.worker`, `.server`, `.pools`.
"""

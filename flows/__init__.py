"""The JobCloud job flow and its parts: catalog model, key safety, staging, container run."""

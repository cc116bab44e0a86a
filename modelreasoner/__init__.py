"""The worker (process_job), the model-server client, and the reference model server."""

"""The worker (process_job) and its model-server client; the reference model server, a deployable of
its own, is the subpackage ``server``."""

"""The reference model server, a deployable of its own (Dockerfile.modelserver): ``app`` (the ASGI
app and its contracts), ``cli`` (``python -m modelreasoner.server``), ``screening`` (the baseline
model), ``milestones`` (its checklists) and ``emulation`` (tier latency, failure and fault profiles).

This file imports nothing: the worker's simulated client (modelreasoner/simulated.py) uses
``screening`` alone, and importing it loads neither FastAPI nor uvicorn.
"""

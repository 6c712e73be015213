"""The limit of the stack: a Flask app that answers every POST with 200 and does nothing else."""

from flask import Flask

app = Flask("bare")


@app.post("/webhooks/x")
def webhook() -> tuple[str, int]:
    return "{}", 200

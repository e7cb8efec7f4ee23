"""Flower ClientApp of fedpatch: local coresets, scoring and statistics on the client's own data.

Node config: `partition-id` and `num-partitions` (simulation, or one shared copy of the
data split by the run's partition scheme), or `data-root` (+ `categories`) for a client
that holds whole categories; optional `device` and `cache-dir`.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedpatch_app.federated import client

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Local coreset per category this client holds."""
    return client.handle_train(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Phase A: score the local test split with the global banks; maps stay on disk."""
    return client.handle_evaluate(msg, context)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Phase B: sufficient statistics of the quantized maps under the global scaling."""
    return client.handle_query(msg, context)

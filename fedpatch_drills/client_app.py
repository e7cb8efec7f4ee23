"""Drill ClientApps: the product's handlers (`client_app`) under Flower ClientApp mods.

`app` is the ClientApp of drill deployments (`fedpatch_drills.client_app:app`, set by the
drill app that `python -m fedpatch_drills.drill_app` writes): the product's train,
evaluate and query handlers with `faults.fault_mod` around them, so that a SuperNode
whose node config names a `fault` misbehaves. `with_mods` builds the same ClientApp
under any mods; `tampered_app` one whose replies a dishonest node changes before they
leave it (`attacks`), for the in-process grid of tests and benchmarks.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable, Mod

import client_app as product
from fedpatch_drills.faults import fault_mod

#: A dishonest node's change to its own reply: (node id, instruction, reply) -> reply.
Tamper = Callable[[int, Message, Message], Message]


def with_mods(*mods: Mod) -> ClientApp:
    """A ClientApp with the product's handlers, each wrapped in `mods` (outermost first)."""
    app = ClientApp(mods=list(mods))
    app.train()(product.train)
    app.evaluate()(product.evaluate)
    app.query()(product.query)
    return app


def tamper_mod(tamper: Tamper) -> Mod:
    """A mod that hands each reply the node's handlers made to `tamper` before it is sent."""

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        return tamper(context.node_id, msg, call_next(msg, context))

    return mod


def tampered_app(tamper: Tamper) -> ClientApp:
    """The product's ClientApp whose replies pass through `tamper` (see `attacks`)."""
    return with_mods(tamper_mod(tamper))


app = with_mods(fault_mod)

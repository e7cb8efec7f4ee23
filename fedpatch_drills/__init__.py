"""Drills: fault injection and dishonest clients, for deployment drills, tests and benchmarks.

The product (`fedpatch_app`, `client_app`, `server_app`) never imports this package
(tests/test_import_boundaries.py checks it); drill code runs only where a drill asks for it:

- `faults`: `fault_mod`, a Flower ClientApp mod by which a SuperNode whose node config
  names a `fault` crashes or sends a malformed coreset;
- `client_app`: the drill ClientApp (`fedpatch_drills.client_app:app`: the product's
  handlers under `fault_mod`), `with_mods` and `tampered_app` (a node that changes its
  own replies, for the in-process grid);
- `attacks`: dishonest clients (poisoned, inflated, extreme, stolen, impersonating
  replies) for the tests of the defences and `benchmarks/poisoning.py`;
- `drill_app`: writes the app folder that a drill deployment submits with `flwr run`.
"""

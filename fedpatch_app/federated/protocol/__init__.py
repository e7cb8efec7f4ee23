"""The server side of federated PatchCore.

- `server`: the ServerApp's run (`run_server`): settings, dataset, then the protocol's
  phases in order (`federate`), every file written as phases finish.
- `federation`: the protocol (`Federation`): train, accept, merge, evaluate, source check,
  scale, re-merge, statistics, pool; each phase takes and returns typed results
  (`results`) and writes nothing.
- `merge_rule`: how a category's accepted coresets become its bank (`MergeRule`,
  `RobustKCenter`).
- `link`: the only server code that talks to Flower's Grid (`GridLink`).
- `accept`, `category_sizes`: the checks of the replies, the agreed category sizes.
- `outputs`, `facts`: what is written into the run folder, from the phases' results.
"""

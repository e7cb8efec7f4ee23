"""The server's defences against clients that send harmful or made-up data.

- robust merge: coreset rows no other client's rows support are quarantined before the
  merge (`robust_merge`: the geometry, pure; `merge_support`: applied to a round's replies,
  the clients concerned flagged);
- source check: the leave-one-source-out check of which client's bank rows hide labelled
  defects (`source_check`: the statistics and the verdicts, pure; `source_check_verdicts`:
  the clients' reports judged and the clients flagged; its records on the wire are a codec
  of the federated package, `federated.codec_source_check`);
- robust map scaling: a category's map scaling bounded so that no single reply can set it
  (`robust_scaling`);
- bank size: how large each category's global bank may be (`bank_size`).

No defence imports Flower: the federated server calls them with the clients' checked
replies. See docs/security.md for what each defends against and what it costs.
"""

"""What the shared coresets reveal, measured, and share protections.

`fedpatch privacy-audit` (`audit.run_cli`) plays a curious server and a curious client
against exactly the rows a client would share, once per share mode: plain rows (`raw`),
rows under a keyed rotation (`rotation`), rows encrypted between the clients (`relay`).
"""

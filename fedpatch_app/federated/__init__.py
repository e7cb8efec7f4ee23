"""fedpatch_app.federated"""

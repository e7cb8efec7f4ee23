"""fedpatch_app.evaluation"""

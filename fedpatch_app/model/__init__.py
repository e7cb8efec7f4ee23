"""fedpatch_app.model"""

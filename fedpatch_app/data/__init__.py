"""fedpatch_app.data"""

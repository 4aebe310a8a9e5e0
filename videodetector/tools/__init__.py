"""Command-line clients of the backend's REST API (they never import ``videodetector.backend``).

``mass_enroll``: bulk face enrollment, ``findface-mass-enroll`` compatible (reference 8.4).
"""

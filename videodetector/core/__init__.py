"""The shared face core of both programs: models, detections, geometry, images, calibration."""

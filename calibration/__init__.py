"""INT8 calibration: representative data, activation ranges, explicit Q/DQ, calibration caches."""

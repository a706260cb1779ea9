"""Session machinery with the clock as a parameter: liveness and registration
policy, flood control, and for UDP the handshake cookies and the reliability
layer.
"""

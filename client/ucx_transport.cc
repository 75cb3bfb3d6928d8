// UCX data plane, client side (in progress).

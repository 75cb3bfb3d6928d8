// UCX data plane, server side (in progress).

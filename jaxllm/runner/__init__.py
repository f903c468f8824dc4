"""The host<->device boundary: bucket padding, KV cache sizing/allocation, the jitted step, warm-up."""

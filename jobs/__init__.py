"""Job handlers: re-read state, plan with a pure function from `workflows`, act through the runtime."""

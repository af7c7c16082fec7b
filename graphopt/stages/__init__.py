"""The stages of an accelerate run (see graphopt/pipeline.py for their order), each in its own module over the
shared run state of `state.Run`."""

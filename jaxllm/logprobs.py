"""vLLM's ``vllm.logprobs`` names: one ``Logprob`` per token and position, and the two logprobs layouts (a list of
``{token_id: Logprob}`` dicts, or ``FlatLogprobs``). They are defined in ``jaxllm.outputs``."""

from jaxllm.outputs import FlatLogprobs, Logprob, PromptLogprobs, SampleLogprobs

__all__ = ["FlatLogprobs", "Logprob", "PromptLogprobs", "SampleLogprobs"]

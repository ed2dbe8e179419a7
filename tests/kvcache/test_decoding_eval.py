"""Decoding-regime evaluation (thesis 4.3, Table 4.4): without a press the generation is plain greedy
`generate`; under a factor budget the final cache holds, per layer and KV head, the number of pairs the
schedule gives (measured on the cache), and its measured ratio and bytes follow; boxed answers are
extracted and compared; prompts follow the chat template; the tiny Qwen2 fixture loads back; the
AIME25 reader reads both published layouts of its fixture."""

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from thesis.core.errors import ConfigError, DataNotFoundError
from thesis.core.fixtures import materialize
from thesis.core.models import load_hf_causal_lm, load_hf_tokenizer
from thesis.kvcache.baselines import KeyDiffPress, StreamingLLMPress
from thesis.kvcache.decoding_budget import FactorDecodingPress, factor_budget
from thesis.kvcache.decoding_eval import greedy_decode, prompt_ids
from thesis.kvcache.expected_attention import ExpectedAttentionPress
from thesis.kvcache.knorm import KNormPress
from thesis.kvcache.tasks.aime25 import Aime25Task
from thesis.kvcache.tasks.base import Sample
from thesis.kvcache.tasks.math500 import Math500Task
from thesis.kvcache.tasks.metrics import last_boxed

PROMPT, INTERVAL, FACTOR = 40, 8, 4
LAYERS, KV_HEADS, HEAD_DIM = 2, 2, 16


@pytest.fixture(scope="module")
def tiny_qwen2(tmp_path_factory) -> Qwen2ForCausalLM:
    config = Qwen2Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS,
                         num_attention_heads=4, num_key_value_heads=KV_HEADS, max_position_embeddings=512)
    directory = tmp_path_factory.mktemp("tiny_qwen2")
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(directory)
    return Qwen2ForCausalLM.from_pretrained(directory, attn_implementation="sdpa").eval()


@pytest.fixture(scope="module")
def prompt() -> torch.Tensor:
    return torch.randint(0, 256, (1, PROMPT), generator=torch.Generator().manual_seed(3))


def test_without_a_press_the_generation_is_plain_greedy_generate(tiny_qwen2, prompt):
    with torch.no_grad():
        full = tiny_qwen2.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=30,
                                   min_new_tokens=30, do_sample=False, pad_token_id=0)[0, PROMPT:].tolist()
    assert greedy_decode(tiny_qwen2, prompt, None, 30, stop_ids=set()).tokens == full
    stop = full[15]  # a stop token met mid-generation: both end at its first occurrence, keeping it
    with torch.no_grad():
        stopped = tiny_qwen2.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=30,
                                      do_sample=False, eos_token_id=stop, pad_token_id=0)[0, PROMPT:].tolist()
    generation = greedy_decode(tiny_qwen2, prompt, None, 30, {stop})
    assert generation.tokens == stopped == full[:full.index(stop) + 1]
    assert generation.stats.achieved_ratio == 0.0
    assert generation.tokens_seen == PROMPT + len(stopped) - 1


def expected_final_length(generated: int) -> int:
    """Pairs per KV head after `generated` tokens, replaying the schedule of decoding_budget.py: the prompt
    stays whole; each fed token adds a pair; every INTERVAL fed tokens a layer above budget is cut to it."""
    n = seen = PROMPT
    for fed in range(1, generated):  # the last generated token is never fed
        n, seen = n + 1, seen + 1
        if fed % INTERVAL == 0:
            n = min(n, factor_budget(seen, FACTOR))
    return n


@pytest.mark.parametrize("make_inner", [
    lambda: ExpectedAttentionPress(statistics="queries"), lambda: KNormPress(skip_layers=()),
    StreamingLLMPress, KeyDiffPress], ids=["expected_attention", "knorm", "streaming_llm", "keydiff"])
@pytest.mark.parametrize("generated", [33, 37])
def test_final_cache_holds_the_budget_per_head(make_inner, generated, tiny_qwen2, prompt):
    press = FactorDecodingPress(make_inner(), compression_interval=INTERVAL, hidden_states_buffer_size=8,
                                compression_factor=FACTOR)
    generation = greedy_decode(tiny_qwen2, prompt, press, generated, stop_ids=set())
    assert len(generation.tokens) == generated
    seen = PROMPT + generated - 1
    assert generation.tokens_seen == seen
    kept = expected_final_length(generated)
    if generated == 33:  # 32 fed tokens: the run ends on a compression, at exactly 1/N of the tokens seen
        assert kept == seen // FACTOR == 18
    for layer in generation.cache.layers:
        batch, heads, stored, dim = layer.keys.shape
        assert (batch, heads, stored, dim) == (1, KV_HEADS, kept, HEAD_DIM) and layer.values.shape == layer.keys.shape
    assert generation.stats.achieved_ratio == pytest.approx(1 - kept / seen)
    assert generation.stats.cache_bytes == LAYERS * KV_HEADS * kept * HEAD_DIM * 2 * 4  # float32


def test_factor_budget_refuses_no_compression():
    with pytest.raises(ValueError, match="compression_factor"):
        FactorDecodingPress(KeyDiffPress(), compression_factor=1)


def test_boxed_answer_extraction_and_scoring():
    assert last_boxed(r"first \boxed{1}, finally \boxed{\frac{1}{\sqrt{2}}} done") == r"\frac{1}{\sqrt{2}}"
    assert last_boxed(r"\boxed{\{1, 2\}}") == r"\{1, 2\}"
    assert last_boxed("the answer is 7") is None and last_boxed(r"\boxed{7") is None
    math = Sample(id="m", context="", question="", answers=(r"\frac{1}{2}",))
    assert Math500Task(".").score(r"so $\boxed{ \frac{1}{2} }$.", math) == {"accuracy": 1.0}
    assert Math500Task(".").score(r"\frac{1}{2}", math) == {"accuracy": 0.0}  # not boxed
    aime = Sample(id="a", context="", question="", answers=("33",))
    assert Aime25Task(".").score(r"\boxed{033}", aime) == {"accuracy": 1.0}
    assert Aime25Task(".").score(r"\boxed{3} then \boxed{34}", aime) == {"accuracy": 0.0}


def test_aime25_reader_on_its_fixture(tmp_path):
    root = materialize("kv_math_tiny", tmp_path)
    samples = Aime25Task(root / "aime25").samples(tokenizer=None)
    assert [s.answers for s in samples] == [("24",), ("9",), ("55",), ("1",)]
    assert samples[1].context == "How many positive divisors does $36$ have?" and r"\boxed{}" in samples[1].question
    assert [s.id for s in samples] == ["0", "1", "2", "3"]
    opencompass = Aime25Task(root / "aime25_opencompass", files=["aime2025-I.jsonl", "aime2025-II.jsonl"], limit=3)
    assert [s.context for s in opencompass.samples(tokenizer=None)] == [s.context for s in samples[:3]]
    (root / "broken").mkdir()
    (root / "broken" / "test.jsonl").write_text('{"answer": "5"}\n')
    with pytest.raises(DataNotFoundError, match="neither `problem` nor `question`"):
        Aime25Task(root / "broken").samples(tokenizer=None)


@pytest.fixture(scope="module")
def qwen2_fixture(tmp_path_factory):
    return materialize("hf_qwen2_tiny", tmp_path_factory.mktemp("fixtures"))


def test_qwen2_fixture_round_trip(qwen2_fixture):
    model, tokenizer = load_hf_causal_lm(qwen2_fixture), load_hf_tokenizer(str(qwen2_fixture))
    assert isinstance(model, Qwen2ForCausalLM) and model.config.num_key_value_heads == KV_HEADS
    assert model.model.layers[0].self_attn.q_proj.bias is not None  # Qwen2's q/k/v biases
    assert tokenizer.decode(tokenizer("the cache key", return_tensors="pt").input_ids[0]) == "the cache key"


def test_prompt_in_the_chat_template_or_refused_without_one(qwen2_fixture):
    tokenizer = load_hf_tokenizer(str(qwen2_fixture))
    sample = Sample(id="p", context="the model", question=" key", answers=("1",))
    with pytest.raises(ConfigError, match="no chat template.*chat_template=false"):
        prompt_ids(tokenizer, sample, chat_template=True)
    assert tokenizer.decode(prompt_ids(tokenizer, sample, chat_template=False)[0]) == "the model key"
    tokenizer.chat_template = "{% for m in messages %}<s>User: {{ m['content'] }}{% endfor %} Assistant:"
    assert tokenizer.decode(prompt_ids(tokenizer, sample, chat_template=True)[0]) == "<s>User: the model key Assistant:"

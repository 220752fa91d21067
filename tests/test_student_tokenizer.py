"""A student whose tokenizer has no pad token (Llama and Mistral ship none) trains and evaluates: the pad token
falls back to EOS where the student is loaded, once for training, evaluation and the merged copy."""

from pathlib import Path

import pytest

from distill.config import StudentConfig
from student.data import PadCollator, encode_example
from student.evaluate import generate_answers
from student.model import load_student


@pytest.fixture(scope="module")
def padless_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-layer model with a word-level tokenizer that has EOS and no pad token, built in a second."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocabulary = {"<unk>": 0, "</s>": 1, "a": 2, "b": 3, "c": 4, "Label": 5, ":": 6}
    words = Tokenizer(models.WordLevel(vocabulary, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, eos_token="</s>", unk_token="<unk>")
    assert tokenizer.pad_token is None
    config = LlamaConfig(vocab_size=len(vocabulary), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, head_dim=8, eos_token_id=1, bos_token_id=None,
                         pad_token_id=None)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("padless")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_student_without_a_pad_token_evaluates_and_pads_with_eos(padless_model: Path) -> None:
    tokenizer, model = load_student(StudentConfig(model=str(padless_model), dtype="float32"))
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>"
    answers = generate_answers(model.eval(), tokenizer, ["a b Label :", "a b c a b c Label :"], 3, batch_size=2)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    batch = PadCollator(tokenizer.pad_token_id)([encode_example(tokenizer, "a Label :", "b", 16),
                                                 encode_example(tokenizer, "a b c Label :", "c", 16)])
    assert batch["input_ids"][0, -1] == tokenizer.eos_token_id and batch["attention_mask"][0, -1] == 0

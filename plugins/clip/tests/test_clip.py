import math

import attrs
import pytest
import torch
import torch.nn.functional as F
from sslreg_clip import CLIP, TEMPLATES, CLIPConfig
from sslreg_clip.text import TextEncoder
from sslreg_clip.tokenizer import BOS_ID, BYTE_OFFSET, EOS_ID, PAD_ID, ByteTokenizer
from torch import nn

from sslreg import ConfigError, OptimConfig, RunConfig, RunContext, load_registry, testing
from sslreg.data.idx import CLASSES as FASHION_MNIST_CLASSES
from sslreg.objectives import CLIPLoss, clip_loss


def _method(class_names=testing.CLASS_NAMES, seed: int = 0, **options) -> CLIP:
    torch.manual_seed(seed)
    registry = load_registry()
    net = registry.backbones.create("resnet18-narrow", in_channels=1, image_size=28)
    method = registry.build_method("clip", CLIPConfig(**options), net)
    method.setup(RunContext(class_names=class_names))
    return method


def test_conformance_with_a_vit():
    testing.check_method("clip", backbone="vit-mini")


def test_registered_with_paper_defaults():
    spec = load_registry().methods.get("clip")
    assert spec.plugin == "clip"
    assert (spec.views, spec.objective) == ("crop-flip", "clip")
    assert spec.factory.uses_labels is True
    assert "labels" in spec.description.lower()
    config = spec.config_class()
    assert (config.init_temperature, config.max_logit_scale) == (0.07, 100.0)
    assert (config.proj_dim, config.text_width, config.text_layers) == (128, 128, 2)
    assert config.learn_temperature is True
    assert spec.optim == OptimConfig(name="adamw", lr=5e-3, weight_decay=0.2,
                                     betas=(0.9, 0.98), eps=1e-6, warmup_epochs=1)
    assert 6 <= len(TEMPLATES) <= 8 and all(t.count("{}") == 1 for t in TEMPLATES)


# --- tokenizer ---------------------------------------------------------------------------

def test_tokenizer_round_trip_and_padding():
    tokenizer = ByteTokenizer(context_length=12)
    ids = tokenizer.encode(["a cat.", "café"])
    assert ids.shape == (2, 12) and ids.dtype == torch.long
    # "a cat." is 6 bytes: BOS, 6 bytes, EOS, then 4 PAD.
    assert ids[0].tolist() == [BOS_ID, *(b + BYTE_OFFSET for b in b"a cat."), EOS_ID,
                               PAD_ID, PAD_ID, PAD_ID, PAD_ID]
    assert tokenizer.decode(ids[0]) == "a cat."
    assert tokenizer.decode(ids[1]) == "café"  # é is two UTF-8 bytes
    assert int(ids[1].ne(PAD_ID).sum()) == 2 + 5
    assert int(ids.max()) < tokenizer.vocab_size == 259


def test_tokenizer_truncates_but_keeps_eos():
    tokenizer = ByteTokenizer(context_length=5)
    ids = tokenizer.encode(["abcdefgh", "abc"])
    assert ids[0].tolist() == [BOS_ID, *(b + BYTE_OFFSET for b in b"abc"), EOS_ID]
    assert tokenizer.decode(ids[0]) == "abc"
    assert ids[1].tolist()[-1] == EOS_ID  # exactly fits: no padding
    # Every row holds exactly one EOS, whatever the length.
    long = ByteTokenizer(context_length=8).encode(["x" * 100, "", "y"])
    assert (long == EOS_ID).sum(dim=1).tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="context_length"):
        ByteTokenizer(context_length=2)
    with pytest.raises(TypeError):
        tokenizer.encode("not a list")


def test_every_caption_fits_the_default_context():
    tokenizer = ByteTokenizer(CLIPConfig().context_length)
    for name in FASHION_MNIST_CLASSES:
        for template in TEMPLATES:
            caption = template.format(name)
            assert tokenizer.decode(tokenizer.encode([caption])[0]) == caption


# --- text encoder ------------------------------------------------------------------------

def _encoder() -> TextEncoder:
    torch.manual_seed(0)
    return TextEncoder(vocab_size=259, context_length=10, width=16, layers=2, heads=2,
                       out_dim=8).eval()


def test_text_encoder_reads_the_eos_token_under_a_causal_mask():
    encoder = _encoder()
    tokens = ByteTokenizer(10).encode(["ab", "ab"])  # BOS a b EOS PAD...
    tokens[1, 5:] = 77  # junk after EOS: the causal mask hides it from the EOS feature
    out = encoder(tokens)
    assert out.shape == (2, 8)
    torch.testing.assert_close(out[0], out[1])
    changed = tokens.clone()
    changed[1, 1] = 99  # a byte before EOS does change it
    assert not torch.allclose(encoder(changed)[1], out[1])


def test_text_encoder_matches_a_plain_reference():
    encoder = _encoder()
    tokens = ByteTokenizer(10).encode(["hello", "a"])
    x = encoder.token_embedding(tokens) + encoder.positions
    mask = torch.ones(10, 10).tril().bool()
    for block in encoder.blocks:
        h = block.norm1(x)
        q, k, v = block.attn.qkv(h).reshape(2, 10, 3, 2, 8).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-2, -1) / math.sqrt(8)).masked_fill(~mask, float("-inf"))
        x = x + block.attn.proj((scores.softmax(-1) @ v).transpose(1, 2).flatten(2))
        x = x + block.mlp(block.norm2(x))
    features = encoder.norm(x)[torch.arange(2), torch.tensor([6, 2])]  # EOS positions
    torch.testing.assert_close(encoder(tokens), encoder.projection(features),
                               rtol=1e-5, atol=1e-6)


# --- loss and temperature ----------------------------------------------------------------

def test_clip_loss_by_hand():
    # Two orthogonal pairs: logits [[s, 0], [0, s]]; each CE is log(1 + e^-s).
    image = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    text = torch.tensor([[1.0, 0.0], [0.0, 0.5]])
    for scale in (1.0, 10.0):
        loss = clip_loss(image, text, torch.tensor(scale))
        torch.testing.assert_close(loss, torch.tensor(math.log(1 + math.exp(-scale))))
    # Swapped captions: logits [[0, s], [s, 0]], each CE is log(1 + e^s).
    loss = clip_loss(image, text.flip(0), torch.tensor(2.0))
    torch.testing.assert_close(loss, torch.tensor(math.log(1 + math.exp(2.0))))


def test_clip_loss_is_the_builtin_objective_at_temperature_one_over_scale():
    generator = torch.Generator().manual_seed(0)
    image, text = torch.randn(2, 6, 5, generator=generator)
    for scale in (1 / 0.07, 3.0, 100.0):
        expected = CLIPLoss(temperature=1 / scale)(image, text)
        torch.testing.assert_close(clip_loss(image, text, torch.tensor(scale)), expected)


def test_logit_scale_is_learned_and_clipped_at_100():
    method = _method()
    assert isinstance(method.objective, CLIPLoss)  # the registered objective, built for it
    logit_scale = method.objective.logit_scale
    assert logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    torch.testing.assert_close(method.scale(), torch.tensor(1 / 0.07))
    image, text = torch.randn(2, 4, 128, generator=torch.Generator().manual_seed(1))
    method.objective(image, text).backward()
    assert logit_scale.grad is not None and logit_scale.grad != 0
    with torch.no_grad():
        logit_scale.fill_(math.log(500.0))
    testing.step_end(method)
    assert method.scale().item() == pytest.approx(100.0)
    with torch.no_grad():
        logit_scale.fill_(-1.0)
    testing.step_end(method)
    assert method.scale().item() == pytest.approx(1.0)
    fixed = _method(learn_temperature=False)
    assert not fixed.objective.logit_scale.requires_grad


def test_logit_scale_is_trained_saved_and_loads_from_older_checkpoints():
    method = _method(init_temperature=0.1, max_logit_scale=50.0)
    assert (method.objective.temperature, method.objective.max_logit_scale) == (0.1, 50.0)
    # First among the parameters, where the method's own logit_scale was: optimizer
    # states of checkpoints written before the objective held it still line up.
    assert next(method.parameters()) is method.objective.logit_scale
    state = method.state_dict()
    assert "objective.logit_scale" in state and "logit_scale" not in state
    older = {("logit_scale" if k == "objective.logit_scale" else k): v
             for k, v in state.items()}
    older["logit_scale"] = torch.tensor(1.5)
    other = _method(seed=1)
    other.load_state_dict(older)  # strict: the old key is moved, nothing is left over
    assert other.objective.logit_scale.item() == 1.5


# --- captions and templates --------------------------------------------------------------

def test_setup_tokenizes_every_class_through_every_template():
    method = _method(class_names=("cat", "T-shirt/top"))
    # Cut after the longest caption's EOS (the causal mask makes the rest irrelevant).
    longest = max(len(template.format("T-shirt/top")) for template in TEMPLATES)
    assert method.captions.shape == (2, len(TEMPLATES), longest + 2)
    assert method.tokenizer.decode(method.captions[1, 0]) == TEMPLATES[0].format("T-shirt/top")
    assert "captions" not in method.state_dict()  # rebuilt by setup, not saved
    bare = CLIP(CLIPConfig(), method.backbone, CLIPLoss())
    with pytest.raises(ValueError, match="class names"):
        bare.training_step([torch.randn(2, 1, 28, 28)], testing.clock(bare),
                           labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        method.training_step([torch.randn(2, 1, 28, 28)], testing.clock(method))


def test_templates_are_random_per_sample_and_move_with_the_global_step():
    method = _method()
    first = method.template_choices(64, step=0)
    assert first.shape == (64,) and set(first.tolist()) == set(range(len(TEMPLATES)))
    torch.testing.assert_close(_method().template_choices(64, 0), first)  # same seed, same draws
    assert not torch.equal(_method(seed=1).template_choices(64, 0), first)
    assert not torch.equal(method.template_choices(64, step=1), first)
    # The draws are saved and the step is the engine's: a resumed model draws what this
    # one would, with no counter of its own.
    resumed = _method(seed=5)
    resumed.load_state_dict(method.state_dict())
    assert "steps" not in method.state_dict()
    torch.testing.assert_close(resumed.template_choices(64, 2), method.template_choices(64, 2))


def test_caption_embeddings_equal_encoding_each_samples_caption():
    method = _method().eval()
    labels = torch.tensor([0, 3, 3, 1, 2])
    templates = torch.tensor([0, 7, 2, 2, 5])
    texts = [TEMPLATES[t].format(testing.CLASS_NAMES[c])
             for c, t in zip(labels.tolist(), templates.tolist(), strict=True)]
    expected = method.encode_text(method.tokenizer.encode(texts))
    torch.testing.assert_close(method.caption_embeddings(labels, templates), expected,
                               rtol=1e-4, atol=1e-5)


def test_training_step_is_the_plain_reference():
    method, policy = testing.build("clip")
    method.train()
    views = policy(testing.tiny_images(), torch.Generator().manual_seed(0))
    assert len(views) == 1  # one view is enough for an image-text loss
    labels = testing.tiny_labels()
    templates = method.template_choices(len(labels), step=0)
    texts = [TEMPLATES[t].format(testing.CLASS_NAMES[c])
             for c, t in zip(labels.tolist(), templates.tolist(), strict=True)]
    image = method.encode_image(views[0])
    text = method.encode_text(method.tokenizer.encode(texts))
    expected = CLIPLoss(temperature=0.07)(image, text)  # the scale is still at 1 / 0.07
    output = testing.training_step(method, views)  # step 0, testing.tiny_labels()
    torch.testing.assert_close(output.loss, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(output.metrics["infonce_bound"], math.log(8) - output.loss.detach())
    torch.testing.assert_close(output.metrics["logit_scale"], torch.tensor(1 / 0.07))
    torch.testing.assert_close(output.embeddings.norm(dim=1), torch.ones(8))


# --- zero-shot classification ------------------------------------------------------------

def test_class_embeddings_ensemble_the_templates():
    method = _method().eval()
    expected = []
    for name in testing.CLASS_NAMES:
        tokens = method.tokenizer.encode([template.format(name) for template in TEMPLATES])
        text = F.normalize(method.encode_text(tokens), dim=1)  # (T, D)
        expected.append(F.normalize(text.mean(dim=0), dim=0))
    torch.testing.assert_close(method.class_embeddings(), torch.stack(expected),
                               rtol=1e-4, atol=1e-5)


class _Flatten(nn.Module):
    output_dim = 3

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)


def test_zero_shot_accuracy_on_a_hand_built_model():
    method = CLIP(CLIPConfig(proj_dim=3), _Flatten(), CLIPLoss())
    method.setup(RunContext(class_names=("a", "b", "c")))
    with torch.no_grad():
        method.image_projection.weight.copy_(torch.eye(3))
    method.class_embeddings = lambda: torch.eye(3)  # class k sits on axis k
    images = torch.tensor([[2.0, 0.1, 0.0], [0.0, 1.0, 0.2], [0.0, 0.0, 3.0],
                           [1.0, 0.9, 0.0], [0.1, 0.0, -1.0]]).view(5, 1, 1, 3)
    # Nearest axes: 0, 1, 2, 0, 0; three of the five labels below agree.
    labels = torch.tensor([0, 1, 2, 1, 2])
    for batch_size in (2, 512):
        result = method.extra_evaluation(images, labels, batch_size=batch_size)
        assert result == {"zero_shot_acc": pytest.approx(0.6)}


# --- config ------------------------------------------------------------------------------

def test_overrides_are_validated():
    registry = load_registry()
    config = RunConfig.build(registry, "clip", ["method.init_temperature=0.1"])
    assert config.method_config.init_temperature == 0.1
    with pytest.raises(ConfigError, match="init_temperature"):
        RunConfig.build(registry, "clip", ["method.init_temperature=0"])
    with pytest.raises(ConfigError, match="text_heads"):
        RunConfig.build(registry, "clip", ["method.text_heads=3"])  # 128 % 3 != 0
    with pytest.raises(ConfigError, match="max_logit_scale"):
        RunConfig.build(registry, "clip", ["method.max_logit_scale=10"])  # below 1/0.07
    with pytest.raises(ConfigError, match="learn_temperature"):
        RunConfig.build(registry, "clip", ["method.learn_temperature=maybe"])
    with pytest.raises(ValueError):
        attrs.evolve(CLIPConfig(), context_length=2)

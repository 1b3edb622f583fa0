// Two accelerators in one process train like one accelerator on the same global batch; bad splits are refused.
using L2L.Backends;
using L2L.Model;
using L2L.Model.Device;
using L2L.TestSupport;
using L2L.Training.Distributed;
using L2L.Training.Optim;
using L2L.Training.Parallel;
using Xunit;

namespace L2L.Training.Tests;

/// <summary>A second CPU accelerator, next to the assembly's, for the tests of two devices in one process.</summary>
public sealed class SecondCpuDevice : IDisposable
{
    /// <summary>An ILGPU CPU accelerator of its own (its own context, streams and memory tracker).</summary>
    public Backend Backend { get; } = Backend.Create(new DeviceSpec(DeviceKind.Cpu), BackendFixture.CpuDevice);

    /// <inheritdoc/>
    public void Dispose() => Backend.Dispose();
}

public sealed class ParallelDeviceTests(BackendFixture fixture, SecondCpuDevice second) : IClassFixture<SecondCpuDevice>
{
    // Tolerance: each device sums its own micro-batches' gradients on the device, and the host adds the two devices' sums,
    // where one device adds all four micro-batches in one running sum: the same terms, grouped ((g0+g1)+(g2+g3)) instead
    // of (((g0+g1)+g2)+g3), so gradients differ in the last bits. AdamW normalizes by sqrt(v), which turns a relative
    // gradient difference of ~1e-7 into a similar relative step difference; after five steps of lr 3e-3 the weights
    // (order 0.02-1) agree to a few 1e-7. 1e-5 absolute / 1e-4 relative keeps two orders of margin, while a gradient
    // counted twice or dropped, a wrong loss scale or a misrouted micro-batch moves losses and weights by far more.
    private const double Atol = 1e-5, Rtol = 1e-4;
    private const int Steps = 5;

    private ParallelSetup One => new([fixture.Get(DeviceKind.Cpu)], new SingleProcessCollectives());
    private ParallelSetup Two => new([fixture.Get(DeviceKind.Cpu), second.Backend], new SingleProcessCollectives());

    public static TheoryData<StashPlacement> Placements => new(StashPlacement.Device, StashPlacement.Host);

    [Theory]
    [MemberData(nameof(Placements))]
    public void TwoDevicesMatchOneDeviceOnTheSameGlobalBatch(StashPlacement placement)
    {
        var one = ParallelHarness.Train(One, Steps, placement);
        var two = ParallelHarness.Train(Two, Steps, placement);
        var again = ParallelHarness.Train(Two, Steps, placement);

        Assert.All(one.Losses, l => Assert.InRange(l, 0.5, 10));
        Assert.True(one.Losses[^1] < one.Losses[0], $"the loss should fall: {string.Join(", ", one.Losses)}");
        TensorAssert.Close(one.Losses, two.Losses, Atol, Rtol, "losses, 2 devices vs 1");
        TensorAssert.Close(TestData.ToDouble(TrainingHarness.Flatten(one.Weights)), TrainingHarness.Flatten(two.Weights), Atol, Rtol, "weights, 2 devices vs 1");
        TensorAssert.Close(TestData.ToDouble(TrainingHarness.Flatten(one.State.LayerStates.ToArray())), TrainingHarness.Flatten(two.State.LayerStates.ToArray()),
            Atol, Rtol, "AdamW state, 2 devices vs 1");
        // The sums have a fixed order (device order on the host, micro-batch order on each device), so reruns are identical.
        Assert.Equal(two.Losses, again.Losses);
        TensorAssert.Equal(TrainingHarness.Flatten(two.Weights), TrainingHarness.Flatten(again.Weights), "2-device reruns");
        // Every layer's gradient norm comes from the reduced gradients: it matches one device's global norm.
        for (var k = 0; k < Steps; k++)
            Assert.Equal(one.Results[k].GradNorm, two.Results[k].GradNorm, 1e-4 * one.Results[k].GradNorm);
        Assert.All(two.Results, r => Assert.Equal(0, r.CollectiveSeconds));
    }

    /// <summary>
    /// In bf16 each device narrows its own sum of its micro-batches' gradients to 16 bits and the host adds the two in
    /// FP32, where one device narrows the whole sum once: the gradients differ by about one BF16 rounding (2^-9
    /// relative), and later steps see weights that differ in a 16-bit ulp here and there. So, as for relay against
    /// conventional in 16 bits: losses to 2e-3 relative; none of the weights by more than 2·η per step (a near-zero
    /// gradient whose sign flips moves an early AdamW step by about η either way). Unlike there, every gradient here may
    /// differ by a rounding, not only those behind a flipped 16-bit weight, so more weights move apart: at most 5% by more
    /// than 1e-4 (1.8% measured after five steps).
    /// </summary>
    [Theory]
    [MemberData(nameof(Placements))]
    public void TwoDevicesMatchOneDeviceInBf16(StashPlacement placement)
    {
        var one = ParallelHarness.Train(One, Steps, placement, precision: Precision.Bf16);
        var two = ParallelHarness.Train(Two, Steps, placement, precision: Precision.Bf16);
        var again = ParallelHarness.Train(Two, Steps, placement, precision: Precision.Bf16);
        var fp32 = ParallelHarness.Train(One, Steps, placement);
        Assert.True(one.Losses[^1] < one.Losses[0], $"the loss should fall: {string.Join(", ", one.Losses)}");
        Assert.NotEqual(fp32.Losses, one.Losses); // bf16 did run
        TensorAssert.Close(one.Losses, two.Losses, 0, 2e-3, "bf16 losses, 2 devices vs 1");
        var a = TestData.ToDouble(TrainingHarness.Flatten(one.Weights));
        var b = TrainingHarness.Flatten(two.Weights);
        TensorAssert.Close(a, b, 2 * 3e-3 * Steps, 0, "bf16 weights, 2 devices vs 1, each");
        var off = a.Zip(b, (x, y) => Math.Abs(x - y)).Count(d => d > 1e-4);
        Assert.True(off <= a.Length / 20, $"{off} of {a.Length} weights differ by more than 1e-4");
        Assert.Equal(two.Losses, again.Losses);
        TensorAssert.Equal(TrainingHarness.Flatten(two.Weights), TrainingHarness.Flatten(again.Weights), "2-device bf16 reruns");
    }

    [Fact]
    public void ClippingUsesTheNormOfTheReducedGradients()
    {
        // A max norm of 0.05 clips most layers at every step (their norms are ~0.1-1), so a norm taken from one device's
        // half of the gradients would clip by a different factor and move the weights far outside the tolerance.
        var one = ParallelHarness.Train(One, Steps, StashPlacement.Device, layerClip: 0.05f);
        var two = ParallelHarness.Train(Two, Steps, StashPlacement.Device, layerClip: 0.05f);
        var free = ParallelHarness.Train(One, Steps, StashPlacement.Device);
        // Global clipping (deferred updates): the step's factor from the norm of all the reduced gradients.
        var globalOne = ParallelHarness.Train(One, Steps, StashPlacement.Host, globalClip: 0.2f);
        var globalTwo = ParallelHarness.Train(Two, Steps, StashPlacement.Host, globalClip: 0.2f);
        TensorAssert.Close(globalOne.Losses, globalTwo.Losses, Atol, Rtol, "globally clipped losses, 2 devices vs 1");
        TensorAssert.Close(TestData.ToDouble(TrainingHarness.Flatten(globalOne.Weights)), TrainingHarness.Flatten(globalTwo.Weights), Atol, Rtol, "globally clipped weights, 2 devices vs 1");
        for (var k = 0; k < Steps; k++)
            Assert.Equal(globalOne.Results[k].GradNorm, globalTwo.Results[k].GradNorm, 1e-4 * globalOne.Results[k].GradNorm);
        Assert.True(globalOne.Results[0].GradNorm > 0.4, $"the clip should bind (norm {globalOne.Results[0].GradNorm})");
        var globalMoved = TrainingHarness.Flatten(free.Weights).Zip(TrainingHarness.Flatten(globalOne.Weights)).Max(p => Math.Abs(p.First - p.Second));
        Assert.True(globalMoved > 1e-3, $"global clipping should change the weights (max difference {globalMoved})");
        TensorAssert.Close(one.Losses, two.Losses, Atol, Rtol, "clipped losses, 2 devices vs 1");
        TensorAssert.Close(TestData.ToDouble(TrainingHarness.Flatten(one.Weights)), TrainingHarness.Flatten(two.Weights), Atol, Rtol, "clipped weights, 2 devices vs 1");
        var moved = TrainingHarness.Flatten(free.Weights).Zip(TrainingHarness.Flatten(one.Weights)).Max(p => Math.Abs(p.First - p.Second));
        Assert.True(moved > 1e-3, $"clipping should change the weights (max difference {moved})");
    }

    [Fact]
    public void DevicesDrawTheDropoutMasksOneDeviceDraws()
    {
        // Masks are keyed by the micro-batch's index in the rank's batch, so device 1's first micro-batch (index 2)
        // draws what one device draws for its third: with other masks the losses would differ by far more than rounding.
        var rates = new DropoutRates(0.1f, 0f, 0.1f);
        var one = ParallelHarness.Train(One, Steps, StashPlacement.Device, dropout: rates);
        var two = ParallelHarness.Train(Two, Steps, StashPlacement.Device, dropout: rates);
        var without = ParallelHarness.Train(One, Steps, StashPlacement.Device);
        TensorAssert.Close(one.Losses, two.Losses, Atol, Rtol, "losses with dropout, 2 devices vs 1");
        TensorAssert.Close(TestData.ToDouble(TrainingHarness.Flatten(one.Weights)), TrainingHarness.Flatten(two.Weights), Atol, Rtol, "weights with dropout, 2 devices vs 1");
        Assert.NotEqual(without.Losses[0], one.Losses[0]); // dropout is really on
    }

    [Fact]
    public void OneDeviceOfOneRankIsThePlainRelayBitForBit()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var config = ParallelHarness.Tiny();
        var layout = new ModelLayout(config);
        var mb = new MicroBatch(config, 2, 8);
        var settings = new OptimizerSettings(OptimizerKind.AdamW, 3e-3f, WeightDecay: 0.1f);
        var schedule = new LearningRateSchedule(ScheduleKind.Constant, settings.LearningRate);
        using var eps = new EagerParamServer(backend, layout, Models.LayerInitializer(layout, 11), settings, schedule, threads: 2);
        using var relay = new RelayExecutor(backend, eps, mb, 4, StashPlacement.Host);
        var loader = new L2L.Model.Data.BatchLoader(new L2L.Model.Data.SyntheticCorpus(32, 1 << 14, seed: 7), 8, 8);
        var inputs = new int[64];
        var targets = new int[64];
        var losses = new double[Steps];
        for (var k = 0; k < Steps; k++)
        {
            loader.Fill(k, inputs, targets);
            losses[k] = relay.Step(k, inputs, targets).Loss;
        }
        var parallel = ParallelHarness.Train(One, Steps, StashPlacement.Host);
        Assert.Equal(losses, parallel.Losses);
        TensorAssert.Equal(TrainingHarness.Flatten(relay.Weights()), TrainingHarness.Flatten(parallel.Weights), "one device through ParallelRelay");
    }

    [Fact]
    public void AReplicaThatFailsEndsTheStepOnEveryDeviceWithItsError()
    {
        // Four blocks, so the healthy replica fills its 3-slot gradient ring and would wait for the failed one's gradients.
        var config = ParallelHarness.Tiny(layers: 4);
        var layout = new ModelLayout(config);
        var settings = new OptimizerSettings(OptimizerKind.AdamW, 3e-3f);
        using var eps = new EagerParamServer(Two.Devices[0], layout, Models.LayerInitializer(layout, 1), settings,
            new LearningRateSchedule(ScheduleKind.Constant, 3e-3f), threads: 2, parallel: Two);
        using var executor = ParallelRelay.Create(Two, eps, new MicroBatch(config, 2, 8), 2, StashPlacement.Device);
        var inputs = new int[32];
        var targets = new int[32];
        targets[^1] = 99; // outside the vocabulary of 32, in the second device's share only
        var bad = Assert.Throws<ArgumentException>(() => executor.Step(0, inputs, targets));
        Assert.Contains("outside the vocabulary", bad.Message);
        var after = Assert.Throws<InvalidOperationException>(() => executor.Step(1, inputs, new int[32]));
        Assert.Contains("failed in an earlier step", after.Message);
    }

    [Fact]
    public void BadSplitsAndRefusedOptionsAreClearErrors()
    {
        // 3 micro-batches per rank do not split across 2 devices.
        var odd = Assert.Throws<ArgumentException>(() => ParallelHarness.Train(Two, 1, StashPlacement.Device, globalBatch: 6, globalMicroBatches: 3));
        Assert.Contains("do not split across 2 devices", odd.Message);
        // A global batch of 6 micro-batches does not split across 2 ranks x 2 devices; 8 do, 4 per rank.
        var fourParts = new ParallelSetup(Two.Devices, new TwoRankStandIn());
        var global = Assert.Throws<ArgumentException>(() => fourParts.MicroBatchesPerRank(6));
        Assert.Contains("6 micro-batches do not split across 2 rank(s) x 2 device(s)", global.Message);
        Assert.Equal(4, fourParts.MicroBatchesPerRank(8));
        // Rank 0 of 2 takes sequences 0, 2, 4 of six; five sequences do not split.
        var share = new int[6];
        fourParts.TakeRankShare([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5], share, seqLen: 2);
        Assert.Equal([0, 0, 2, 2, 4, 4], share);
        var uneven = Assert.Throws<ArgumentException>(() => fourParts.TakeRankShare(new int[10], new int[5], seqLen: 2));
        Assert.Contains("multiple of 2", uneven.Message);
        // Sharding needs more than one rank.
        var shard = Assert.Throws<ArgumentException>(() => ParallelHarness.Train(One with { ShardOptimizer = true }, 1, StashPlacement.Device));
        Assert.Contains("at least 2 ranks", shard.Message);
        // The device-resident embedding/head optimizer cannot see the other device's gradients.
        var config = ParallelHarness.Tiny();
        var layout = new ModelLayout(config);
        var settings = new OptimizerSettings(OptimizerKind.AdamW, 3e-3f);
        var resident = Assert.Throws<ArgumentException>(() => new EagerParamServer(Two.Devices[0], layout, Models.LayerInitializer(layout, 1), settings,
            new LearningRateSchedule(ScheduleKind.Constant, 3e-3f), deviceUpdated: [layout.Embedding.Index, layout.Head.Index], parallel: Two));
        Assert.Contains("--embedding-update host", resident.Message);
        var deferred = Assert.Throws<ArgumentException>(() => new EagerParamServer(Two.Devices[0], layout, Models.LayerInitializer(layout, 1), settings,
            new LearningRateSchedule(ScheduleKind.Constant, 3e-3f), mode: Update.UpdateMode.Deferred, parallel: new ParallelSetup(Two.Devices, new TwoRankStandIn(), ShardOptimizer: true)));
        Assert.Contains("leave --shard-optimizer off", deferred.Message);
        using var eps = new EagerParamServer(Two.Devices[0], layout, Models.LayerInitializer(layout, 1), settings,
            new LearningRateSchedule(ScheduleKind.Constant, 3e-3f), parallel: Two);
        var scaling = Assert.Throws<ArgumentException>(() => ParallelRelay.Create(Two, eps, new MicroBatch(config, 2, 8), 4, StashPlacement.Device,
            control: new Update.GradientControl(null, Update.ClipMode.Global, Update.LossScaleMode.Dynamic, layout.Layers.Count)));
        Assert.Contains("--loss-scale none", scaling.Message);
        var mismatch = Assert.Throws<ArgumentException>(() => ParallelRelay.Create(One, eps, new MicroBatch(config, 2, 8), 4, StashPlacement.Device));
        Assert.Contains("same setup", mismatch.Message);
    }
}

/// <summary>The rank and size of rank 0 of a 2-rank job, for checks that never reach a collective.</summary>
internal sealed unsafe class TwoRankStandIn : IHostCollectives
{
    public int Rank => 0;
    public int WorldSize => 2;
    public string Description => "stand-in for rank 0 of 2 (no collectives)";
    public void Barrier() => throw new NotSupportedException();
    public void AllReduceSum(float* buffer, long count) => throw new NotSupportedException();
    public void ReduceScatterBlockSum(float* send, float* block, long blockCount) => throw new NotSupportedException();
    public void AllGather(float* block, float* all, long blockCount) => throw new NotSupportedException();
    public void Broadcast(byte* buffer, long count, int root) => throw new NotSupportedException();
    public void Abort(int exitCode, string message) => throw new NotSupportedException();
    public void Dispose() { }
}

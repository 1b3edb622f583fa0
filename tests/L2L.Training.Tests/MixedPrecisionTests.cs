// Cross mixed precision end to end: relay (device and host stash) and conventional agree in bf16 and fp16, the 16-bit
// categories and bus kinds are exactly half, overflow never reaches the weights, and a 16-bit run resumes exactly.
using L2L.Backends;
using L2L.Model;
using L2L.TestSupport;
using L2L.Training.Optim;
using L2L.Training.Update;
using Xunit;

namespace L2L.Training.Tests;

public sealed class MixedPrecisionTests(BackendFixture fixture) : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "l2l-mixed-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    public static TheoryData<Precision, OptimizerKind> SixteenBit => new()
    {
        { Precision.Bf16, OptimizerKind.AdamW },
        { Precision.Bf16, OptimizerKind.Sgd },
        { Precision.Fp16, OptimizerKind.AdamW },
        { Precision.Fp16, OptimizerKind.Sgd },
    };

    private static TrainOptions Options(Precision precision, ExecutorKind executor, StashPlacement stash = StashPlacement.Device,
        OptimizerKind optimizer = OptimizerKind.AdamW, long steps = 3) =>
        TrainingHarness.Options(TrainingHarness.Tiny(), executor, stash, optimizer, steps: steps) with { Precision = precision };

    /// <summary>
    /// Relay and conventional run the same 16-bit kernels in the same order on the same 16-bit weights, so their
    /// forward and backward agree to the bit while the weights agree. They differ where FP32 does (device vs host
    /// optimizer, a last-bit difference in an FP32 master now and then), and such a difference can move a master across
    /// a 16-bit rounding boundary, so one weight of the working copy differs by one 16-bit ulp (2^-8 relative in bf16,
    /// 2^-11 in fp16) and the later steps see slightly different activations and gradients. Tolerances: the losses to
    /// 2e-3 relative (a few such ulps of the logits); the FP32 masters, almost all, to 1e-4, while any single weight may
    /// differ by up to 2·η per step: where a gradient is near zero the perturbation can flip its sign, and an early AdamW
    /// step moves a weight by about η whatever the gradient's size (SGD's moves are η·g, far smaller). At most 0.5% of the
    /// weights may exceed 1e-4. The device and host stash run identical arithmetic in the same order: equal bits.
    /// </summary>
    [Theory]
    [MemberData(nameof(SixteenBit))]
    public void RelayMatchesConventionalInSixteenBits(Precision precision, OptimizerKind optimizer)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var conventional = TrainingHarness.Run(backend, Options(precision, ExecutorKind.Conventional, optimizer: optimizer));
        var relayDevice = TrainingHarness.Run(backend, Options(precision, ExecutorKind.Relay, StashPlacement.Device, optimizer));
        var relayHost = TrainingHarness.Run(backend, Options(precision, ExecutorKind.Relay, StashPlacement.Host, optimizer));

        Assert.All(conventional.Losses, l => Assert.InRange(l, 0.5, 10));
        TensorAssert.Close(conventional.Losses, relayDevice.Losses, 0, 2e-3, "relay (device stash) losses");
        TensorAssert.Close(conventional.Losses, relayHost.Losses, 0, 2e-3, "relay (host stash) losses");
        var options = Options(precision, ExecutorKind.Relay, optimizer: optimizer);
        var bound = 2 * options.Optimizer.LearningRate * options.Steps;
        var reference = TestData.ToDouble(TrainingHarness.Flatten(conventional.Weights));
        var relay = TrainingHarness.Flatten(relayDevice.Weights);
        TensorAssert.Close(reference, relay, bound, 0, "relay (device stash) weights, each");
        var off = reference.Zip(relay, (a, b) => Math.Abs(a - b)).Count(d => d > 1e-4);
        Assert.True(off <= reference.Length / 200, $"{off} of {reference.Length} weights differ by more than 1e-4");
        TensorAssert.Equal(TrainingHarness.Flatten(relayDevice.Weights), TrainingHarness.Flatten(relayHost.Weights), "device vs host stash");
        Assert.Equal(relayDevice.Losses, relayHost.Losses);
        Assert.All(conventional.Metrics.Concat(relayDevice.Metrics), m => Assert.Null(m.OverflowedLayers));
        Assert.All(relayHost.Metrics, m => Assert.Equal(precision.Name(), m.Precision));
    }

    /// <summary>
    /// 16 bits keep training close to FP32: the first loss (the same initial weights rounded to 16 bits) agrees to about the
    /// rounding of the weights and activations, and a few steps later the losses still agree to a few percent.
    /// </summary>
    [Theory]
    [InlineData(Precision.Bf16)]
    [InlineData(Precision.Fp16)]
    public void SixteenBitTrainingTracksFp32(Precision precision)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var fp32 = TrainingHarness.Run(backend, Options(Precision.Fp32, ExecutorKind.Relay, steps: 6));
        var half = TrainingHarness.Run(backend, Options(precision, ExecutorKind.Relay, steps: 6));
        Assert.InRange(Math.Abs(half.Losses[0] - fp32.Losses[0]) / fp32.Losses[0], 0, precision == Precision.Bf16 ? 2e-2 : 5e-3);
        TensorAssert.Close(fp32.Losses, half.Losses, 0, 5e-2, "losses");
        Assert.NotEqual(fp32.Losses, half.Losses); // 16 bits did run
    }

    public static TheoryData<ExecutorKind, StashPlacement, Precision> Layouts => new()
    {
        { ExecutorKind.Relay, StashPlacement.Device, Precision.Bf16 },
        { ExecutorKind.Relay, StashPlacement.Host, Precision.Bf16 },
        { ExecutorKind.Relay, StashPlacement.Host, Precision.Fp16 },
        { ExecutorKind.Conventional, StashPlacement.Device, Precision.Bf16 },
    };

    /// <summary>
    /// Exact byte accounting against FP32 on the same model and batch: the weights, gradients, stash and boundary
    /// gradients crossing the bus are exactly half; io (token ids, targets, plans, the loss and the FP32 sums of squares)
    /// is unchanged. On the device the params (the 16-bit copies the layers read) and the boundary gradients are exactly
    /// half, and so is the relay's stash of block inputs; the parameter gradients stay FP32 (they accumulate over the
    /// micro-batches) plus, in the relay, one 16-bit staging buffer for the narrowed gradients; the FP32 masters of
    /// device-updated layers are counted as optimizer state.
    /// </summary>
    [Theory]
    [MemberData(nameof(Layouts))]
    public void SixteenBitCategoriesAndBusKindsAreExactlyHalf(ExecutorKind executor, StashPlacement stash, Precision precision)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var fp32 = TrainingHarness.Run(backend, Options(Precision.Fp32, executor, stash, steps: 1) with { EmbeddingUpdate = executor == ExecutorKind.Relay ? UpdateLocation.Host : null }).Metrics[^1];
        var half = TrainingHarness.Run(backend, Options(precision, executor, stash, steps: 1) with { EmbeddingUpdate = executor == ExecutorKind.Relay ? UpdateLocation.Host : null }).Metrics[^1];
        var (b32, b16) = (fp32.BusBytesByKind, half.BusBytesByKind);
        Assert.Equal(b32.Weights, 2 * b16.Weights);
        Assert.Equal(b32.Grads, 2 * b16.Grads);
        Assert.Equal(b32.Stash, 2 * b16.Stash);
        Assert.Equal(b32.BoundaryGrads, 2 * b16.BoundaryGrads);
        Assert.Equal(b32.Io, b16.Io);
        if (executor == ExecutorKind.Relay)
        {
            Assert.True(b16.Weights > 0 && b16.Grads > 0);
            if (stash == StashPlacement.Host) Assert.True(b16.Stash > 0 && b16.BoundaryGrads > 0);
        }
        long Category(StepMetrics m, string name) => m.DevicePeakBytesByCategory.TryGetValue(name, out var v) ? v : 0;
        Assert.Equal(Category(fp32, "params"), 2 * Category(half, "params"));
        Assert.Equal(Category(fp32, "boundary-grads"), 2 * Category(half, "boundary-grads"));
        Assert.True(Category(half, "params") > 0 && Category(half, "boundary-grads") > 0);
        if (executor == ExecutorKind.Relay)
        {
            Assert.Equal(Category(fp32, "stash"), 2 * Category(half, "stash"));
            // FP32 gradient slots plus one 16-bit staging buffer of the largest host-updated layer.
            var layout = new ModelLayout(TrainingHarness.Tiny());
            var staging = Math.Max(layout.Blocks[0].Length, Math.Max(layout.Embedding.Length, layout.Head.Length));
            Assert.Equal(Category(fp32, "grads") + 2 * staging, Category(half, "grads"));
        }
        else
        {
            Assert.Equal(Category(fp32, "grads"), Category(half, "grads"));
            // The FP32 masters join the optimizer's m and v.
            Assert.Equal(Category(fp32, "optimizer") + Category(fp32, "params"), Category(half, "optimizer"));
        }
    }

    [Fact]
    public void TheRecordedPrecisionAndOverflowsReachTheMetricsLine()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var m = TrainingHarness.Run(backend, Options(Precision.Bf16, ExecutorKind.Relay, steps: 1)).Metrics[^1];
        using var json = System.Text.Json.JsonDocument.Parse(Trainer.ToJson(m));
        Assert.Equal("bf16", json.RootElement.GetProperty("precision").GetString());
        Assert.False(json.RootElement.TryGetProperty("overflowed_layers", out _));
        using var over = System.Text.Json.JsonDocument.Parse(Trainer.ToJson(m with { OverflowedLayers = ["h.0"] }));
        Assert.Equal("h.0", over.RootElement.GetProperty("overflowed_layers")[0].GetString());
    }

    public static TheoryData<ExecutorKind, StashPlacement> Executors => new()
    {
        { ExecutorKind.Relay, StashPlacement.Device },
        { ExecutorKind.Relay, StashPlacement.Host },
        { ExecutorKind.Conventional, StashPlacement.Device },
    };

    /// <summary>
    /// FP16 with a loss scale so large that the scaled gradients overflow: every layer's gradients hold an inf, every
    /// layer is reported and none is updated, so the weights stay finite and unchanged and a checkpoint saved after it
    /// holds the initial weights — never NaN.
    /// </summary>
    [Theory]
    [MemberData(nameof(Executors))]
    public void AnOverflowingFp16LossScaleSkipsAndReportsEveryLayerAndNeverSavesNaN(ExecutorKind executor, StashPlacement stash)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var options = Options(Precision.Fp16, executor, stash, steps: 2) with { StaticLossScale = 1e30f };
        using var trainer = new Trainer(backend, options, TrainingHarness.Corpus());
        var before = TrainingHarness.Flatten(trainer.Weights());
        var first = trainer.Step();
        Assert.NotNull(first.OverflowedLayers);
        Assert.True(double.IsFinite(first.Loss));
        var layout = new ModelLayout(options.Config);
        Assert.Equal(layout.Layers.Select(l => l.Name).Order(), first.OverflowedLayers!.Order());
        trainer.Step();
        var after = TrainingHarness.Flatten(trainer.Weights());
        Assert.All(after, w => Assert.True(float.IsFinite(w)));
        TensorAssert.Equal(before, after, "weights after two overflowed steps");
        trainer.Save(_dir);
        var (_, saved) = Checkpoint.Load(_dir);
        Assert.All(TrainingHarness.Flatten(saved), w => Assert.True(float.IsFinite(w)));
    }

    /// <summary>
    /// One layer's gradients poisoned (an injected overflow) in eager mode: only that layer is skipped and reported, every
    /// other layer trains as in the same run without the fault.
    /// </summary>
    [Theory]
    [InlineData(Precision.Fp16)]
    [InlineData(Precision.Bf16)]
    public void AnOverflowedLayerIsSkippedAloneInEagerMode(Precision precision)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var layout = new ModelLayout(TrainingHarness.Tiny());
        var poisoned = layout.Blocks[1].Index;
        var options = Options(precision, ExecutorKind.Relay, steps: 1) with { EmbeddingUpdate = UpdateLocation.Host };
        using var clean = new Trainer(backend, options, TrainingHarness.Corpus());
        var initial = clean.Weights();
        clean.Step();
        var cleanWeights = clean.Weights();
        using var faulty = new Trainer(backend, options with { GradientFault = new GradientFault(0, poisoned) }, TrainingHarness.Corpus());
        var result = faulty.Step();
        Assert.Equal([layout.Layers[poisoned].Name], result.OverflowedLayers);
        var weights = faulty.Weights();
        for (var i = 0; i < layout.Layers.Count; i++)
            TensorAssert.Equal(i == poisoned ? initial[i] : cleanWeights[i], weights[i], layout.Layers[i].Name);
    }

    /// <summary>
    /// A static loss scale that does not overflow: a power of two scales every gradient exactly and the host divides it
    /// out exactly, so in bf16 (whose range is FP32's) the run equals the unscaled one bit for bit.
    /// </summary>
    [Fact]
    public void APowerOfTwoStaticScaleIsExactWithoutOverflow()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var plain = TrainingHarness.Run(backend, Options(Precision.Bf16, ExecutorKind.Relay));
        var scaled = TrainingHarness.Run(backend, Options(Precision.Bf16, ExecutorKind.Relay) with { StaticLossScale = 1024f });
        Assert.Equal(plain.Losses, scaled.Losses);
        TensorAssert.Equal(TrainingHarness.Flatten(plain.Weights), TrainingHarness.Flatten(scaled.Weights), "scaled vs unscaled");
        Assert.All(scaled.Metrics, m => Assert.Equal(1024f, m.LossScale));
    }

    /// <summary>A bf16 checkpoint resumes exactly: the 16-bit copies rebuilt from the saved FP32 masters are the ones the run had.</summary>
    [Theory]
    [MemberData(nameof(Executors))]
    public void ABf16CheckpointResumesExactlyInBf16(ExecutorKind executor, StashPlacement stash)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var options = Options(Precision.Bf16, executor, stash, steps: 4);
        var straight = TrainingHarness.Run(backend, options);
        using (var first = new Trainer(backend, options, TrainingHarness.Corpus()))
        {
            first.Step();
            first.Step();
            first.Save(_dir);
        }
        var layout = new ModelLayout(options.Config);
        var (_, weights) = Checkpoint.Load(_dir);
        var state = Checkpoint.LoadTrainingState(_dir, layout);
        Assert.Equal("bf16", state.Metadata[RunSettings.Precision]);
        var resumed = TrainingHarness.Run(backend, options, weights, state);
        Assert.Equal(straight.Losses[2..], resumed.Losses);
        TensorAssert.Equal(TrainingHarness.Flatten(straight.Weights), TrainingHarness.Flatten(resumed.Weights), "weights after 4 steps");
    }

    /// <summary>Evaluation in 16 bits reads the weights rounded as training does: a bf16 evaluation equals the bf16 run's own loss.</summary>
    [Fact]
    public void EvaluationInBf16EqualsTheBf16ForwardOfTraining()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var options = Options(Precision.Bf16, ExecutorKind.Relay, steps: 1) with { Batch = 2, MicroBatches = 1 };
        using var trainer = new Trainer(backend, options, TrainingHarness.Corpus());
        var weights = trainer.Weights();
        var loss = trainer.Step().Loss;
        using var evaluator = new Evaluator(backend, new ModelLayout(options.Config), weights, options.Batch, options.SeqLen, Precision.Bf16);
        var eval = evaluator.Evaluate(TrainingHarness.Corpus(), 1);
        Assert.Equal(loss, eval.Loss, 5);
        using var fp32 = new Evaluator(backend, new ModelLayout(options.Config), weights, options.Batch, options.SeqLen);
        Assert.NotEqual(eval.Loss, fp32.Evaluate(TrainingHarness.Corpus(), 1).Loss);
    }

    /// <summary>
    /// The unit-scaled GPT-2 trains in FP16 with no loss scale: nothing overflows or is skipped, the loss falls as in its
    /// FP32 run, and the two end within 3% of each other. (Why the standard model needs help in FP16: its gradients at
    /// GPT-2's minibatch size underflow to zero in the real FP16 layers, while the unit-scaled model's do not; see
    /// SixteenBitLayersTests.Fp16UnderflowsTheStandardModelsGradientsButNotTheUnitScaledOnes.)
    /// </summary>
    [Fact]
    public void TheUnitScaledModelTrainsInFp16WithoutALossScale()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var options = TrainingHarness.Options(TrainingHarness.Tiny() with { UnitScaling = true }, ExecutorKind.Relay, StashPlacement.Host, batch: 8, steps: 60) with
        {
            Optimizer = new OptimizerSettings(OptimizerKind.AdamW, 1e-2f),
        };
        var fp32 = TrainingHarness.Run(backend, options);
        var fp16 = TrainingHarness.Run(backend, options with { Precision = Precision.Fp16 });
        Assert.All(fp16.Metrics, m => Assert.Null(m.OverflowedLayers));
        Assert.All(fp16.Metrics, m => Assert.Equal(1f, m.LossScale));
        Assert.True(fp16.Losses[^5..].Average() < fp16.Losses[..5].Average() - 0.5, $"fp16 loss went from {fp16.Losses[0]:F3} to {fp16.Losses[^1]:F3}");
        var (a, b) = (fp32.Losses[^5..].Average(), fp16.Losses[^5..].Average());
        Assert.True(Math.Abs(b - a) / a < 0.03, $"last five steps: fp32 {a:F4}, fp16 {b:F4}");
    }
}

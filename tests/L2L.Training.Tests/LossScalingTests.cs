// Dynamic loss scaling (GradScaler semantics) in deferred mode: an overflow skips the whole step and halves the scale.
using L2L.Backends;
using L2L.Model;
using L2L.TestSupport;
using L2L.Training.Optim;
using L2L.Training.Update;
using Xunit;

namespace L2L.Training.Tests;

public sealed class LossScalingTests(BackendFixture fixture) : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "l2l-lossscale-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private static TrainOptions Options(ExecutorKind executor, StashPlacement stash, GradientFault? fault = null, long steps = 4) =>
        TrainingHarness.Options(TrainingHarness.Tiny(), executor, stash, OptimizerKind.AdamW, steps: steps) with
        {
            LossScale = LossScaleMode.Dynamic,
            GradientFault = fault,
        };

    public static TheoryData<ExecutorKind, StashPlacement, string> Cases => new()
    {
        { ExecutorKind.Relay, StashPlacement.Device, "block" },
        { ExecutorKind.Relay, StashPlacement.Host, "block" },
        { ExecutorKind.Relay, StashPlacement.Device, "embedding" },
        { ExecutorKind.Conventional, StashPlacement.Device, "block" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void AnInjectedOverflowSkipsTheStepForEveryLayer(ExecutorKind executor, StashPlacement stash, string where)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var layout = new ModelLayout(TrainingHarness.Tiny());
        var layer = where == "block" ? layout.Blocks[1].Index : layout.Embedding.Index;
        var options = Options(executor, stash, new GradientFault(1, layer));
        Assert.Equal(UpdateMode.Deferred, options.ResolvedUpdateMode);
        using var trainer = new Trainer(backend, options, TrainingHarness.Corpus());
        var first = trainer.Step();
        var weights = trainer.Weights();
        var state = trainer.State();
        var poisoned = trainer.Step();
        // Nothing moved: weights and optimizer state of every layer are the same bits as before the step.
        TensorAssert.Equal(TrainingHarness.Flatten(weights), TrainingHarness.Flatten(trainer.Weights()), "weights after the skipped step");
        TensorAssert.Equal(state.LayerStates.SelectMany(x => x).ToArray(), trainer.State().LayerStates.SelectMany(x => x).ToArray(), "optimizer state");
        Assert.Equal(LossScaler.InitialScale, first.LossScale);
        Assert.Equal(LossScaler.InitialScale / 2, poisoned.LossScale);
        Assert.Equal(0, first.SkippedSteps);
        Assert.Equal(1, poisoned.SkippedSteps);
        Assert.True(double.IsNaN(poisoned.GradNorm));
        Assert.True(double.IsFinite(poisoned.Loss)); // the loss itself was fine; only the gradient overflowed
        // Training continues at the lower scale and moves the weights again.
        var next = trainer.Step();
        Assert.Equal(1, next.SkippedSteps);
        Assert.Equal(LossScaler.InitialScale / 2, next.LossScale);
        Assert.True(double.IsFinite(next.GradNorm));
        Assert.NotEqual(TrainingHarness.Flatten(weights), TrainingHarness.Flatten(trainer.Weights()));
    }

    [Theory]
    [InlineData(ExecutorKind.Relay, StashPlacement.Device)]
    [InlineData(ExecutorKind.Relay, StashPlacement.Host)]
    [InlineData(ExecutorKind.Conventional, StashPlacement.Device)]
    public void WithoutOverflowScalingIsExact(ExecutorKind executor, StashPlacement stash)
    {
        // Backward is linear in the loss gradient and the scale is a power of two, so every gradient is exactly
        // scale times the unscaled one and unscaling restores it: the same bits as training without a scale
        // (in FP32 nothing overflows or underflows here, which is why this only exercises the machinery).
        var backend = fixture.Get(DeviceKind.Cpu);
        var scaled = TrainingHarness.Run(backend, Options(executor, stash));
        var plain = TrainingHarness.Run(backend, Options(executor, stash) with { LossScale = LossScaleMode.None, UpdateMode = UpdateMode.Deferred });
        Assert.Equal(plain.Losses, scaled.Losses);
        TensorAssert.Equal(TrainingHarness.Flatten(plain.Weights), TrainingHarness.Flatten(scaled.Weights), "scaled vs unscaled");
        Assert.Equal(plain.Metrics.Select(m => m.GradNorm), scaled.Metrics.Select(m => m.GradNorm));
    }

    [Fact]
    public void ScaleAndSkippedStepsResume()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var layout = new ModelLayout(TrainingHarness.Tiny());
        var options = Options(ExecutorKind.Relay, StashPlacement.Device, new GradientFault(1, layout.Blocks[0].Index));
        var straight = TrainingHarness.Run(backend, options);
        using (var first = new Trainer(backend, options, TrainingHarness.Corpus()))
        {
            first.Step();
            first.Step();
            first.Save(_dir);
        }
        var (_, weights) = Checkpoint.Load(_dir);
        var state = Checkpoint.LoadTrainingState(_dir, layout);
        var resumed = TrainingHarness.Run(backend, options, weights, state);
        Assert.Equal(straight.Losses[2..], resumed.Losses);
        Assert.Equal(LossScaler.InitialScale / 2, resumed.Metrics[^1].LossScale);
        Assert.Equal(1, resumed.Metrics[^1].SkippedSteps);
        TensorAssert.Equal(TrainingHarness.Flatten(straight.Weights), TrainingHarness.Flatten(resumed.Weights), "weights after 4 steps");
    }

    [Fact]
    public void TheScalerFollowsGradScaler()
    {
        var scaler = new LossScaler();
        for (var i = 0; i < LossScaler.GrowthInterval - 1; i++) scaler.Update(overflow: false);
        Assert.Equal(65536f, scaler.Scale);
        scaler.Update(overflow: false);
        Assert.Equal(131072f, scaler.Scale);
        scaler.Update(overflow: true);
        Assert.Equal(65536f, scaler.Scale);
        Assert.Equal(0, scaler.GoodSteps);
        var e = Assert.Throws<ArgumentException>((Options(ExecutorKind.Relay, StashPlacement.Device) with { UpdateMode = UpdateMode.Eager }).Validate);
        Assert.Contains("--loss-scale", e.Message);
    }
}

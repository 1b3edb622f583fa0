// Checkpoints round-trip the model, and resuming continues the exact same trajectory.
using L2L.Backends;
using L2L.Model;
using L2L.TestSupport;
using Xunit;

namespace L2L.Training.Tests;

public sealed class CheckpointResumeTests(BackendFixture fixture) : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "l2l-ckpt-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    [Fact]
    public void SavedModelLoadsWithTheSameWeightsAndLoss()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var options = TrainingHarness.Options(TrainingHarness.Tiny(), ExecutorKind.Relay, steps: 2);
        float[][] weights;
        using (var trainer = new Trainer(backend, options, TrainingHarness.Corpus()))
        {
            trainer.Run(cancel: TestContext.Current.CancellationToken);
            trainer.Save(_dir);
            weights = trainer.Weights();
        }
        var (config, loaded) = Checkpoint.Load(_dir, options.Config);
        Assert.Equal(options.Config, config);
        TensorAssert.Equal(TrainingHarness.Flatten(weights), TrainingHarness.Flatten(loaded), "weights");

        var layout = new ModelLayout(config);
        using var a = new Evaluator(backend, layout, weights, 2, 8);
        using var b = new Evaluator(backend, layout, loaded, 2, 8);
        var la = a.Evaluate(TrainingHarness.Corpus(), 3);
        var lb = b.Evaluate(TrainingHarness.Corpus(), 3);
        Assert.Equal(la.Loss, lb.Loss);
        Assert.Equal(3 * 2 * 8, la.Tokens);
        Assert.InRange(la.Loss, 0.5, 10);
    }

    [Theory]
    [InlineData(ExecutorKind.Relay, StashPlacement.Host)]
    [InlineData(ExecutorKind.Conventional, StashPlacement.Device)]
    public void ResumeContinuesTheSameTrajectory(ExecutorKind executor, StashPlacement stash)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var four = TrainingHarness.Options(TrainingHarness.Tiny(), executor, stash, steps: 4) with { Schedule = ScheduleKind.Cosine, Warmup = 1 };
        var straight = TrainingHarness.Run(backend, four);

        using (var first = new Trainer(backend, four, TrainingHarness.Corpus()))
        {
            // The same options as the straight run (the cosine spans 4 steps); this run stops after 2.
            first.Step();
            first.Step();
            first.Save(_dir);
        }
        var (_, weights) = Checkpoint.Load(_dir);
        var state = Checkpoint.LoadTrainingState(_dir, new ModelLayout(four.Config));
        Assert.Equal(2, state.Step);
        var resumed = TrainingHarness.Run(backend, four, weights, state);

        Assert.Equal(2, resumed.Losses.Length);
        TensorAssert.Close(straight.Losses[2..], resumed.Losses, 1e-7, 1e-6, "losses of steps 3-4");
        TensorAssert.Close(TestData.ToDouble(TrainingHarness.Flatten(straight.Weights)), TrainingHarness.Flatten(resumed.Weights), 1e-7, 1e-6, "weights after 4 steps");
    }
}

// The relay's embedding and head may be updated on the device (no step-boundary wait) or on the host: same training either way.
using L2L.Backends;
using L2L.Model;
using L2L.TestSupport;
using L2L.Training.Optim;
using L2L.Training.Update;
using Xunit;

namespace L2L.Training.Tests;

public sealed class EmbeddingUpdateTests(BackendFixture fixture) : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "l2l-embupd-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    public static TheoryData<OptimizerKind> Optimizers => new(OptimizerKind.Sgd, OptimizerKind.AdamW);

    private static TrainOptions Options(UpdateLocation where, OptimizerKind optimizer = OptimizerKind.AdamW, int microBatches = 2, long steps = 3,
        StashPlacement stash = StashPlacement.Device) =>
        TrainingHarness.Options(TrainingHarness.Tiny(), ExecutorKind.Relay, stash, optimizer, microBatches: microBatches, steps: steps) with { EmbeddingUpdate = where };

    [Theory]
    [MemberData(nameof(Optimizers))]
    public void DeviceAndHostUpdatesTrainTheSameModel(OptimizerKind optimizer)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var device = TrainingHarness.Run(backend, Options(UpdateLocation.Device, optimizer));
        var host = TrainingHarness.Run(backend, Options(UpdateLocation.Host, optimizer));
        // Same gradients; the update of two layers runs in the device kernel instead of the host's vector
        // code, which may round differently in the last bit (the tolerance of relay vs conventional).
        TensorAssert.Close(host.Losses, device.Losses, 1e-5, 1e-4, "losses");
        TensorAssert.Close(TestData.ToDouble(TrainingHarness.Flatten(host.Weights)), TrainingHarness.Flatten(device.Weights), 1e-5, 1e-4, "weights");
    }

    [Theory]
    [MemberData(nameof(Optimizers))]
    public void DeviceUpdatedLayersMatchConventionalToTheBit(OptimizerKind optimizer)
    {
        // With one micro-batch both executors sum the tied embedding's gradient in the same order (head,
        // then the input scatter) and update it with the same kernel: after one step the embedding and
        // head are identical, bit for bit; the blocks (updated on the host) agree within rounding.
        var backend = fixture.Get(DeviceKind.Cpu);
        var relay = TrainingHarness.Run(backend, Options(UpdateLocation.Device, optimizer, microBatches: 1, steps: 1));
        var conventional = TrainingHarness.Run(backend, TrainingHarness.Options(TrainingHarness.Tiny(), ExecutorKind.Conventional,
            optimizer: optimizer, microBatches: 1, steps: 1));
        var layout = new ModelLayout(TrainingHarness.Tiny());
        TensorAssert.Equal(conventional.Weights[layout.Embedding.Index], relay.Weights[layout.Embedding.Index], "embedding");
        TensorAssert.Equal(conventional.Weights[layout.Head.Index], relay.Weights[layout.Head.Index], "head");
        Assert.Equal(conventional.Losses, relay.Losses);
    }

    [Theory]
    [InlineData(StashPlacement.Device)]
    [InlineData(StashPlacement.Host)]
    public void DeviceUpdateSavesTheEmbeddingAndHeadRoundTrip(StashPlacement stash)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var device = TrainingHarness.Run(backend, Options(UpdateLocation.Device, stash: stash));
        var host = TrainingHarness.Run(backend, Options(UpdateLocation.Host, stash: stash));
        var layout = new ModelLayout(TrainingHarness.Tiny());
        // The host update fetches both layers and copies their gradients out every step.
        var saved = 2L * sizeof(float) * (layout.Embedding.Length + layout.Head.Length);
        for (var i = 0; i < device.Metrics.Count; i++)
            Assert.Equal(host.Metrics[i].BusBytes - saved, device.Metrics[i].BusBytes);
        // Their AdamW moments live on the device instead: 2 floats per parameter in the optimizer category.
        Assert.Equal(2L * sizeof(float) * (layout.Embedding.Length + layout.Head.Length),
            device.Metrics[^1].DevicePeakBytesByCategory["optimizer"] - host.Metrics[^1].DevicePeakBytesByCategory["optimizer"]);
        Assert.All(device.Metrics, m => Assert.True(m.UpdateWaitSeconds >= 0));
    }

    [Theory]
    [InlineData(UpdateLocation.Device)]
    [InlineData(UpdateLocation.Host)]
    public void ResumeContinuesTheSameTrajectory(UpdateLocation where)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var four = Options(where, steps: 4) with { Schedule = ScheduleKind.Cosine, Warmup = 1 };
        var straight = TrainingHarness.Run(backend, four);
        using (var first = new Trainer(backend, four, TrainingHarness.Corpus()))
        {
            first.Step();
            first.Step();
            first.Save(_dir);
        }
        var (_, weights) = Checkpoint.Load(_dir);
        var state = Checkpoint.LoadTrainingState(_dir, new ModelLayout(four.Config));
        var resumed = TrainingHarness.Run(backend, four, weights, state);
        Assert.Equal(straight.Losses[2..], resumed.Losses);
        TensorAssert.Equal(TrainingHarness.Flatten(straight.Weights), TrainingHarness.Flatten(resumed.Weights), "weights after 4 steps");
    }

    [Fact]
    public void CheckpointsFromEitherUpdateLocationAreInterchangeable()
    {
        // The device-updated layers' state is written in the host layout, so a run may switch.
        var backend = fixture.Get(DeviceKind.Cpu);
        using (var first = new Trainer(backend, Options(UpdateLocation.Device, steps: 4), TrainingHarness.Corpus()))
        {
            first.Step();
            first.Step();
            first.Save(_dir);
        }
        var (_, weights) = Checkpoint.Load(_dir);
        var state = Checkpoint.LoadTrainingState(_dir, new ModelLayout(TrainingHarness.Tiny()));
        var onDevice = TrainingHarness.Run(backend, Options(UpdateLocation.Device, steps: 4), weights, state);
        var onHost = TrainingHarness.Run(backend, Options(UpdateLocation.Host, steps: 4), weights, state);
        TensorAssert.Close(onDevice.Losses, onHost.Losses, 1e-5, 1e-4, "losses after resuming");
    }

    [Fact]
    public void LambCannotRunOnTheDevice()
    {
        var options = Options(UpdateLocation.Device, OptimizerKind.Lamb);
        var e = Assert.Throws<ArgumentException>(options.Validate);
        Assert.Contains("--embedding-update", e.Message);
        Assert.Equal(UpdateLocation.Host, (options with { EmbeddingUpdate = null }).ResolvedEmbeddingUpdate);
    }
}

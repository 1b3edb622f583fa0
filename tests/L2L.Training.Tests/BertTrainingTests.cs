// BERT through every executor: relay (device and host stash) computes what conventional training computes; host-stash memory is constant in depth.
using L2L.Backends;
using L2L.TestSupport;
using L2L.Training.Optim;
using Xunit;

namespace L2L.Training.Tests;

public sealed class BertTrainingTests(BackendFixture fixture)
{
    // As for GPT-2 (RelayEquivalenceTests): forward and backward run the same kernels in the same order in
    // every executor; only the optimizer's host vs device rounding differs.
    private const double Atol = 1e-5, Rtol = 1e-4;

    public static TheoryData<OptimizerKind> Optimizers => new(OptimizerKind.Sgd, OptimizerKind.AdamW);

    [Theory]
    [MemberData(nameof(Optimizers))]
    public void RelayMatchesConventionalLossesAndWeights(OptimizerKind optimizer)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var config = BertHarness.Tiny();
        var conventional = BertHarness.Run(backend, BertHarness.Options(config, ExecutorKind.Conventional, optimizer: optimizer));
        var relayDevice = BertHarness.Run(backend, BertHarness.Options(config, ExecutorKind.Relay, StashPlacement.Device, optimizer));
        var relayHost = BertHarness.Run(backend, BertHarness.Options(config, ExecutorKind.Relay, StashPlacement.Host, optimizer));

        Assert.Equal(3, conventional.Losses.Length);
        Assert.All(conventional.Losses, l => Assert.InRange(l, 1, 10)); // near ln(36) = 3.58 at the start
        TensorAssert.Close(conventional.Losses, relayDevice.Losses, Atol, Rtol, "relay (device stash) losses");
        TensorAssert.Close(conventional.Losses, relayHost.Losses, Atol, Rtol, "relay (host stash) losses");
        var reference = TestData.ToDouble(TrainingHarness.Flatten(conventional.Weights));
        TensorAssert.Close(reference, TrainingHarness.Flatten(relayDevice.Weights), Atol, Rtol, "relay (device stash) weights");
        TensorAssert.Close(reference, TrainingHarness.Flatten(relayHost.Weights), Atol, Rtol, "relay (host stash) weights");
        TensorAssert.Equal(TrainingHarness.Flatten(relayDevice.Weights), TrainingHarness.Flatten(relayHost.Weights), "device vs host stash");
        Assert.Equal(relayDevice.Losses, relayHost.Losses);
        // Training moved every layer, the tied word embedding included.
        var initial = L2L.Model.Models.Initialize(new L2L.Model.ModelLayout(config), 11);
        for (var i = 0; i < initial.Length; i++)
            Assert.NotEqual(initial[i], relayHost.Weights[i]);
    }

    [Fact]
    public void MicroBatchCountDoesNotChangeTheResult()
    {
        // The loss is normalised by the minibatch's labelled count, so splitting it differently changes only summation order.
        var backend = fixture.Get(DeviceKind.Cpu);
        var config = BertHarness.Tiny();
        var one = BertHarness.Run(backend, BertHarness.Options(config, ExecutorKind.Relay, microBatches: 1));
        var four = BertHarness.Run(backend, BertHarness.Options(config, ExecutorKind.Relay, microBatches: 4));
        TensorAssert.Close(one.Losses, four.Losses, Atol, Rtol, "losses");
        TensorAssert.Close(TestData.ToDouble(TrainingHarness.Flatten(one.Weights)), TrainingHarness.Flatten(four.Weights), Atol, Rtol, "weights");
    }

    private long Peak(int layers, ExecutorKind executor, StashPlacement stash, int microBatches)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var run = BertHarness.Run(backend, BertHarness.Options(BertHarness.Tiny(layers), executor, stash, batch: 2 * microBatches, microBatches: microBatches, steps: 1));
        Assert.Equal(0, backend.Memory.CurrentBytes);
        return run.Metrics[^1].DevicePeakBytes;
    }

    [Fact]
    public void HostStashPeakIsIdenticalForDepth()
    {
        var reference = Peak(2, ExecutorKind.Relay, StashPlacement.Host, 1);
        Assert.True(reference > 0);
        Assert.Equal(reference, Peak(4, ExecutorKind.Relay, StashPlacement.Host, 1));
        Assert.Equal(reference, Peak(8, ExecutorKind.Relay, StashPlacement.Host, 1));
        Assert.Equal(reference, Peak(4, ExecutorKind.Relay, StashPlacement.Host, 4));
        var two = Peak(2, ExecutorKind.Conventional, StashPlacement.Device, 1);
        var four = Peak(4, ExecutorKind.Conventional, StashPlacement.Device, 1);
        Assert.True(two < four, $"conventional {two} vs {four}");
    }
}

public sealed class BertCheckpointResumeTests(BackendFixture fixture) : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "l2l-bert-ckpt-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    [Theory]
    [InlineData(ExecutorKind.Relay, StashPlacement.Host)]
    [InlineData(ExecutorKind.Conventional, StashPlacement.Device)]
    public void ResumeContinuesTheSameTrajectory(ExecutorKind executor, StashPlacement stash)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var four = BertHarness.Options(BertHarness.Tiny(), executor, stash, steps: 4) with { Schedule = ScheduleKind.Cosine, Warmup = 1 };
        var straight = BertHarness.Run(backend, four);
        var batches = new MaskedBatches(BertHarness.Tiny(), four.Batch, four.SeqLen);
        using (var first = new Trainer(backend, four, batches))
        {
            first.Step();
            first.Step();
            first.Save(_dir);
        }
        var (config, weights) = L2L.Model.Checkpoint.Load(_dir, four.Config);
        Assert.Equal<L2L.Model.IModelConfig>(four.Config, config);
        var state = L2L.Model.Checkpoint.LoadTrainingState(_dir, new L2L.Model.ModelLayout(config));
        Assert.Equal(2, state.Step);
        var resumed = BertHarness.Run(backend, four, weights, state);
        Assert.Equal(2, resumed.Losses.Length);
        TensorAssert.Close(straight.Losses[2..], resumed.Losses, 1e-7, 1e-6, "losses of steps 3-4");
        TensorAssert.Close(TestData.ToDouble(TrainingHarness.Flatten(straight.Weights)), TrainingHarness.Flatten(resumed.Weights), 1e-7, 1e-6, "weights after 4 steps");
    }

    [Fact]
    public void OnTheFlyMaskingTrainsFromTheCorpus()
    {
        // The Trainer's own MLM batches from a token source: finite, labelled losses that differ step to step.
        var backend = fixture.Get(DeviceKind.Cpu);
        var options = BertHarness.Options(BertHarness.Tiny(), ExecutorKind.Relay, StashPlacement.Host, batch: 4, seq: 16);
        using var trainer = new Trainer(backend, options, TrainingHarness.Corpus(32));
        var losses = trainer.Run(cancel: TestContext.Current.CancellationToken).Select(m => m.Loss).ToArray();
        Assert.All(losses, l => Assert.InRange(l, 1, 10));
        Assert.NotEqual(losses[0], losses[1]);
        Assert.Throws<ArgumentException>(() => new Trainer(backend, TrainingHarness.Options(TrainingHarness.Tiny(), ExecutorKind.Relay),
            TrainingHarness.Corpus(), labels: TrainingHarness.Corpus()));
    }
}

public sealed class BertLearningTests(BackendFixture fixture)
{
    [Fact]
    public void TrainingLowersTheMaskedLoss()
    {
        // From ln(36) = 3.58: the masked symbols are predictable from their neighbours in the Markov corpus.
        var backend = fixture.Get(DeviceKind.Cpu);
        var options = BertHarness.Options(BertHarness.Tiny(), ExecutorKind.Relay, StashPlacement.Host, batch: 8, seq: 16, steps: 120) with
        {
            Optimizer = new OptimizerSettings(OptimizerKind.AdamW, 1e-2f),
        };
        var run = BertHarness.Run(backend, options);
        Assert.True(run.Losses[^10..].Average() < run.Losses[..10].Average() - 0.5,
            $"loss went from {run.Losses[..10].Average():F3} to {run.Losses[^10..].Average():F3}");
    }
}

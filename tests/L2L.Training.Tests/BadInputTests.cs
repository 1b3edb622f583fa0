// Bad settings and diverging runs fail with clear errors.
using L2L.Backends;
using L2L.TestSupport;
using L2L.Training.Optim;
using Xunit;

namespace L2L.Training.Tests;

public sealed class BadInputTests(BackendFixture fixture)
{
    [Fact]
    public void DivergingLossStopsWithAClearError()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var options = TrainingHarness.Options(TrainingHarness.Tiny(), ExecutorKind.Relay, steps: 5) with
        {
            Optimizer = new OptimizerSettings(OptimizerKind.Sgd, 1e30f),
        };
        var e = Assert.Throws<NonFiniteLossException>(() => TrainingHarness.Run(backend, options));
        Assert.Contains("--lr", e.Message);
        Assert.Contains("--resume", e.Message);
    }

    [Theory]
    [InlineData(6, 4, 8, "divisible")]
    [InlineData(4, 2, 17, "n_positions")]
    [InlineData(4, 0, 8, "--micro-batches")]
    public void InconsistentShapesAreRejected(int batch, int micro, int seq, string expected)
    {
        var options = TrainingHarness.Options(TrainingHarness.Tiny(), ExecutorKind.Relay, batch: batch, microBatches: micro, seq: seq);
        var e = Assert.Throws<ArgumentException>(options.Validate);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void LambNeedsTheRelayExecutor()
    {
        var options = TrainingHarness.Options(TrainingHarness.Tiny(), ExecutorKind.Conventional, optimizer: OptimizerKind.Lamb);
        var e = Assert.Throws<ArgumentException>(options.Validate);
        Assert.Contains("--executor relay", e.Message);
    }

    [Fact]
    public void DataWithALargerVocabularyThanTheModelIsRejected()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var options = TrainingHarness.Options(TrainingHarness.Tiny(), ExecutorKind.Relay);
        var e = Assert.Throws<ArgumentException>(() => new Trainer(backend, options, TrainingHarness.Corpus(64)));
        Assert.Contains("vocab_size", e.Message);
    }
}

// Relay (device and host stash) computes what conventional training computes: same losses, same weights.
using L2L.Backends;
using L2L.TestSupport;
using L2L.Training.Optim;
using Xunit;

namespace L2L.Training.Tests;

public sealed class RelayEquivalenceTests(BackendFixture fixture)
{
    // Tolerance: both executors run the same kernels in the same order on every micro-batch, and
    // sum gradients over micro-batches in the same order, so forward and backward agree to the
    // bit (every reduction, the embedding's scatter-add included, has a fixed order). What differs is
    // the optimizer: the conventional executor updates on the device, the relay's param server on the
    // host with vectorised code whose rounding may differ in the last bit (operation order, division
    // vs reciprocal). Over three steps that is a few ulps of weights of order
    // 0.02-1, so 1e-5 absolute / 1e-4 relative leaves two orders of magnitude of margin while a
    // real schedule or indexing bug moves values by far more.
    private const double Atol = 1e-5, Rtol = 1e-4;

    public static TheoryData<OptimizerKind> Optimizers => new(OptimizerKind.Sgd, OptimizerKind.AdamW);

    [Theory]
    [MemberData(nameof(Optimizers))]
    public void RelayMatchesConventionalLossesAndWeights(OptimizerKind optimizer)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var config = TrainingHarness.Tiny();
        var conventional = TrainingHarness.Run(backend, TrainingHarness.Options(config, ExecutorKind.Conventional, optimizer: optimizer));
        var relayDevice = TrainingHarness.Run(backend, TrainingHarness.Options(config, ExecutorKind.Relay, StashPlacement.Device, optimizer));
        var relayHost = TrainingHarness.Run(backend, TrainingHarness.Options(config, ExecutorKind.Relay, StashPlacement.Host, optimizer));

        Assert.Equal(3, conventional.Losses.Length);
        Assert.All(conventional.Losses, l => Assert.InRange(l, 0.5, 10));
        TensorAssert.Close(conventional.Losses, relayDevice.Losses, Atol, Rtol, "relay (device stash) losses");
        TensorAssert.Close(conventional.Losses, relayHost.Losses, Atol, Rtol, "relay (host stash) losses");
        var reference = TestData.ToDouble(TrainingHarness.Flatten(conventional.Weights));
        TensorAssert.Close(reference, TrainingHarness.Flatten(relayDevice.Weights), Atol, Rtol, "relay (device stash) weights");
        TensorAssert.Close(reference, TrainingHarness.Flatten(relayHost.Weights), Atol, Rtol, "relay (host stash) weights");

        // Device and host stash run identical arithmetic in the same order; only where the stash lives differs.
        TensorAssert.Equal(TrainingHarness.Flatten(relayDevice.Weights), TrainingHarness.Flatten(relayHost.Weights), "device vs host stash");
        Assert.Equal(relayDevice.Losses, relayHost.Losses);
    }

    [Fact]
    public void TrainingLowersTheLoss()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var options = TrainingHarness.Options(TrainingHarness.Tiny(), ExecutorKind.Relay, StashPlacement.Host, batch: 8, steps: 100) with
        {
            Optimizer = new OptimizerSettings(OptimizerKind.AdamW, 1e-2f),
        };
        var run = TrainingHarness.Run(backend, options);
        // From ln(32) = 3.47 towards the corpus's entropy rate of 1.82 nats.
        Assert.True(run.Losses[^5..].Average() < run.Losses[..5].Average() - 0.5,
            $"loss went from {run.Losses[0]:F3} to {run.Losses[^1]:F3}");
    }

    [Fact]
    public void MicroBatchCountDoesNotChangeTheResult()
    {
        // The same minibatch split into 1 or 4 micro-batches gives the same gradients (summed in a different order).
        var backend = fixture.Get(DeviceKind.Cpu);
        var config = TrainingHarness.Tiny();
        var one = TrainingHarness.Run(backend, TrainingHarness.Options(config, ExecutorKind.Relay, microBatches: 1));
        var four = TrainingHarness.Run(backend, TrainingHarness.Options(config, ExecutorKind.Relay, microBatches: 4));
        TensorAssert.Close(one.Losses, four.Losses, Atol, Rtol, "losses");
        TensorAssert.Close(TestData.ToDouble(TrainingHarness.Flatten(one.Weights)), TrainingHarness.Flatten(four.Weights), Atol, Rtol, "weights");
    }
}

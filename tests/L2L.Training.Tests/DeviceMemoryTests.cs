// Device memory: constant in depth and micro-batch count for relay with a host stash; growing for the others; no allocation after step one.
using L2L.Backends;
using L2L.TestSupport;
using Xunit;

namespace L2L.Training.Tests;

public sealed class DeviceMemoryTests(BackendFixture fixture)
{
    private long Peak(int layers, ExecutorKind executor, StashPlacement stash, int microBatches, int microBatchSize = 2)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var options = TrainingHarness.Options(TrainingHarness.Tiny(layers), executor, stash,
            batch: microBatches * microBatchSize, microBatches: microBatches, steps: 1);
        var run = TrainingHarness.Run(backend, options);
        Assert.Equal(0, backend.Memory.CurrentBytes); // everything was released with the trainer
        return run.Metrics[^1].DevicePeakBytes;
    }

    [Fact]
    public void HostStashPeakIsIdenticalForDepthAndMicroBatchCount()
    {
        var reference = Peak(2, ExecutorKind.Relay, StashPlacement.Host, 1);
        Assert.True(reference > 0);
        Assert.Equal(reference, Peak(4, ExecutorKind.Relay, StashPlacement.Host, 1));
        Assert.Equal(reference, Peak(8, ExecutorKind.Relay, StashPlacement.Host, 1));
        Assert.Equal(reference, Peak(2, ExecutorKind.Relay, StashPlacement.Host, 4));
        Assert.Equal(reference, Peak(8, ExecutorKind.Relay, StashPlacement.Host, 4));
    }

    [Fact]
    public void ConventionalPeakGrowsWithDepth()
    {
        var two = Peak(2, ExecutorKind.Conventional, StashPlacement.Device, 1);
        var four = Peak(4, ExecutorKind.Conventional, StashPlacement.Device, 1);
        var eight = Peak(8, ExecutorKind.Conventional, StashPlacement.Device, 1);
        Assert.True(two < four && four < eight, $"{two} {four} {eight}");
        Assert.Equal(four - two, (eight - four) / 2); // linear in depth
    }

    [Fact]
    public void DeviceStashPeakGrowsWithDepthTimesMicroBatches()
    {
        var config = TrainingHarness.Tiny();
        var stashPerLayerAndMicroBatch = 2L * 8 * config.Channels * sizeof(float); // micro-batch 2 x T 8 x C
        var l2u1 = Peak(2, ExecutorKind.Relay, StashPlacement.Device, 1);
        var l4u1 = Peak(4, ExecutorKind.Relay, StashPlacement.Device, 1);
        var l2u4 = Peak(2, ExecutorKind.Relay, StashPlacement.Device, 4);
        var l4u4 = Peak(4, ExecutorKind.Relay, StashPlacement.Device, 4);
        Assert.Equal(2 * stashPerLayerAndMicroBatch, l4u1 - l2u1);
        Assert.Equal(2 * 4 * stashPerLayerAndMicroBatch, l4u4 - l2u4);
        // Boundary gradients add one activation per micro-batch on top of the stash.
        Assert.Equal((3 * 2 + 3) * stashPerLayerAndMicroBatch, l2u4 - l2u1);
    }

    [Theory]
    [InlineData(ExecutorKind.Relay, StashPlacement.Device)]
    [InlineData(ExecutorKind.Relay, StashPlacement.Host)]
    [InlineData(ExecutorKind.Conventional, StashPlacement.Device)]
    public void NoDeviceAllocationAfterTheFirstStep(ExecutorKind executor, StashPlacement stash)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var options = TrainingHarness.Options(TrainingHarness.Tiny(), executor, stash, steps: 3);
        using var trainer = new Trainer(backend, options, TrainingHarness.Corpus());
        var first = trainer.Step();
        var second = trainer.Step();
        var third = trainer.Step();
        Assert.Equal(first.DeviceAllocations, second.DeviceAllocations);
        Assert.Equal(first.DeviceAllocations, third.DeviceAllocations);
        Assert.Equal(first.DevicePeakBytes, third.DevicePeakBytes);
    }

    [Fact]
    public void TooSmallADeviceIsAClearError()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var options = TrainingHarness.Options(TrainingHarness.Tiny(), ExecutorKind.Conventional) with { DeviceBudgetBytes = 64 * 1024 };
        try
        {
            var e = Assert.Throws<DeviceOutOfMemoryException>(() => TrainingHarness.Run(backend, options));
            Assert.Contains("--stash host", e.Message);
            Assert.Equal(0, backend.Memory.CurrentBytes); // what was allocated before the failure was released
        }
        finally
        {
            backend.Memory.BudgetBytes = null;
        }
    }
}

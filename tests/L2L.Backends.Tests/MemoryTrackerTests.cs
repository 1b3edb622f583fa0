// The memory tracker accounts every allocation by category, keeps peaks, and fails clearly past its budget.
using L2L.Backends;
using L2L.TestSupport;
using Xunit;

namespace L2L.Backends.Tests;

public sealed class MemoryTrackerTests(BackendFixture fixture)
{
    [Fact]
    public void TracksCurrentAndPeakBytesPerCategory()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var tracker = new MemoryTracker(backend.Accelerator);
        var count = tracker.AllocationCount;
        using (var a = tracker.Allocate<float>(100, MemoryCategory.Params, "a"))
        using (var b = tracker.Allocate<int>(10, MemoryCategory.Stash, "b"))
        {
            Assert.Equal(400, tracker.Current(MemoryCategory.Params));
            Assert.Equal(40, tracker.Current(MemoryCategory.Stash));
            Assert.Equal(440, tracker.CurrentBytes);
            Assert.Equal(count + 2, tracker.AllocationCount);
            Assert.Equal(100, a.View.Length);
        }
        Assert.Equal(0, tracker.CurrentBytes);
        Assert.Equal(440, tracker.PeakBytes);
        Assert.Equal(400, tracker.PeakByCategory()["params"]);
        Assert.Equal(0, tracker.PeakByCategory()["boundary-grads"]);
        tracker.ResetPeak();
        Assert.Equal(0, tracker.PeakBytes);
    }

    [Fact]
    public void DisposingTwiceReleasesOnce()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var tracker = new MemoryTracker(backend.Accelerator);
        var buffer = tracker.Allocate<float>(8, MemoryCategory.Grads, "g");
        buffer.Dispose();
        buffer.Dispose();
        Assert.Equal(0, tracker.CurrentBytes);
        Assert.Throws<ObjectDisposedException>(() => buffer.View);
    }

    [Fact]
    public void BudgetOverflowNamesTheAllocationAndWhatIsInUse()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var tracker = new MemoryTracker(backend.Accelerator, budgetBytes: 1000);
        using var held = tracker.Allocate<float>(200, MemoryCategory.Workspace, "held");
        var e = Assert.Throws<DeviceOutOfMemoryException>(() => tracker.Allocate<float>(100, MemoryCategory.Stash, "stash-slot"));
        Assert.Contains("stash-slot", e.Message);
        Assert.Contains("workspace 800 B", e.Message);
        Assert.Contains("--stash host", e.Message);
        Assert.Equal(800, tracker.CurrentBytes);
    }

    [Fact]
    public void SlicesAreBoundsChecked()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        using var buffer = backend.Allocate<float>(10, MemoryCategory.Other, "x");
        Assert.Equal(4, buffer.Slice(6, 4).Length);
        Assert.Throws<ArgumentOutOfRangeException>(() => buffer.Slice(7, 4));
    }
}

// --devices parsing and the launch plan read from a launcher's environment: which accelerators each rank opens.
using L2L.Backends;
using L2L.Cli.Commands;
using Xunit;

namespace L2L.Cli.Tests;

public sealed class DeviceListTests
{
    [Fact]
    public void EntriesExpandInOrder_CountsFromTheGivenIndex_AndTheCpuRepeats()
    {
        var list = DeviceList.Parse("cuda*2, opencl:1, cuda:4*2, cpu*2");
        Assert.Equal(
            [new DeviceSpec(DeviceKind.Cuda, 0), new(DeviceKind.Cuda, 1), new(DeviceKind.OpenCL, 1), new(DeviceKind.Cuda, 4), new(DeviceKind.Cuda, 5),
             new(DeviceKind.Cpu, 0), new(DeviceKind.Cpu, 0)],
            list.Specs);
        Assert.Equal([true, true, false, false, false, true, true], list.Relative);
    }

    [Fact]
    public void UnindexedGpusMoveUpByTheLocalRank_IndexedOnesAndTheCpuStay()
    {
        // Each rank takes two CUDA devices of its own: local rank 2 takes cuda:4 and cuda:5.
        var list = DeviceList.Parse("cuda*2,opencl:3,cpu");
        Assert.Equal(list.Specs, list.ForLocalRank(0));
        Assert.Equal([new DeviceSpec(DeviceKind.Cuda, 4), new(DeviceKind.Cuda, 5), new(DeviceKind.OpenCL, 3), new(DeviceKind.Cpu, 0)], list.ForLocalRank(2));
        Assert.Equal([new DeviceSpec(DeviceKind.OpenCL, 1)], DeviceList.Parse("opencl").ForLocalRank(1));
    }

    [Theory]
    [InlineData("cuda:0,,cuda:1", "--devices 'cuda:0,,cuda:1' has an empty entry")]
    [InlineData("cpu*-1", "--devices: 'cpu*-1' has a bad count")]
    [InlineData("cuda:1,cuda*2", "--devices: cuda:1 is listed twice")]
    [InlineData("auto*2", "--devices: 'auto*2' does not say which devices")]
    public void ABadEntryIsOneSentenceNamingIt(string text, string expected)
    {
        var e = Assert.Throws<FormatException>(() => DeviceList.Parse(text));
        Assert.StartsWith(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void TheLaunchPlanFollowsTheLauncherAndTheMode()
    {
        var openMpi = new Dictionary<string, string> { ["OMPI_COMM_WORLD_SIZE"] = "4", ["OMPI_COMM_WORLD_RANK"] = "3", ["OMPI_COMM_WORLD_LOCAL_RANK"] = "1" };
        var hydra = new Dictionary<string, string> { ["PMI_SIZE"] = "2", ["PMI_RANK"] = "1", ["MPI_LOCALRANKID"] = "1" };
        string? In(IReadOnlyDictionary<string, string> env, string name) => env.TryGetValue(name, out var v) ? v : null;

        var plan = LaunchPlan.Resolve("auto", n => In(openMpi, n));
        Assert.True(plan.Distributed);
        Assert.Equal((4, 3, 1, false), (plan.WorldSizeHint, plan.LaunchRank, plan.LocalRank, plan.Writes));
        plan = LaunchPlan.Resolve("mpi", n => In(hydra, n));
        Assert.Equal((2, 1, 1, false), (plan.WorldSizeHint, plan.LaunchRank, plan.LocalRank, plan.Writes));
        plan = LaunchPlan.Resolve("auto", _ => null);
        Assert.False(plan.Distributed);
        Assert.Equal((1, 0, true), (plan.WorldSizeHint, plan.LaunchRank, plan.Writes));
        plan = LaunchPlan.Resolve("none", n => In(openMpi, n));
        Assert.False(plan.Distributed);
        Assert.True(plan.Writes);
    }
}

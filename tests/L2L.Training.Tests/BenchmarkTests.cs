// The benchmark drivers run end to end on the CPU accelerator and report consistent figures (no timing is asserted).
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.TestSupport;
using L2L.Training.Benchmarks;
using Xunit;

namespace L2L.Training.Tests;

public sealed class BenchmarkTests(BackendFixture fixture)
{
    [Fact]
    public void LayerShapesAreTheThreeProductsOfEveryLinearLayer()
    {
        var shapes = GemmBenchmark.LayerShapes(tokens: 10, channels: 4).ToList();
        Assert.Equal(12, shapes.Count);
        Assert.Contains(("mlp.c_fc forward", GemmLayout.NN, 10, 16, 4), shapes);
        Assert.Contains(("mlp.c_fc dInput", GemmLayout.NT, 10, 4, 16), shapes);
        Assert.Contains(("mlp.c_fc dWeight", GemmLayout.TN, 4, 16, 10), shapes);
    }

    [Fact]
    public void GemmBenchmarkReportsEveryShapeWithoutCublasOffCuda()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var report = GemmBenchmark.Run(backend, [("square", GemmLayout.NN, 8, 8, 8), ("tall", GemmLayout.TN, 16, 4, 8)], repeats: 1);
        Assert.Equal(2, report.Results.Count);
        Assert.All(report.Results, r => Assert.True(r.Tflops > 0 && r.CublasTflops is null));
        Assert.Equal("not a CUDA device", report.CublasStatus);
        Assert.Contains("\"tflops\"", report.ToJson());
    }

    [Fact]
    public void TrainBenchmarkMeasuresEveryExecutorAndShowsConstantHostStashMemory()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var report = TrainBenchmark.Run(backend, "tiny", TrainingHarness.Tiny(), microBatchSize: 2, seq: 8, microBatchCounts: [1, 3], steps: 1, warmup: 1);
        Assert.Equal(6, report.Results.Count);
        Assert.All(report.Results, r => Assert.True(r.Error is null && r.TokensPerSecond > 0 && r.DevicePeakBytes > 0));
        var host = report.Results.Where(r => r.Stash == "host").Select(r => r.DevicePeakBytes).Distinct();
        Assert.Single(host);
        var device = report.Results.Where(r => r.Stash == "device").ToList();
        Assert.True(device[1].DevicePeakBytes > device[0].DevicePeakBytes);
        // Weights cross the bus once per pass whatever the micro-batch count (only the inputs grow with it).
        Assert.Equal(device[0].BusBytesByKind!["weights"], device[1].BusBytesByKind!["weights"]);
        Assert.Equal(device[0].BusBytesByKind!["grads"], device[1].BusBytesByKind!["grads"]);
        Assert.True(device[1].BusBytesByKind!["io"] > device[0].BusBytesByKind!["io"]);
        Assert.All(report.Results, r => Assert.Equal(r.BusBytesPerStep, r.BusBytesByKind!.Values.Sum()));
        Assert.All(report.Results, r => Assert.Equal(2, r.MicroBatchSize));
        Assert.True(report.ModelFlopsPerToken > 6.0 * 12 * TrainingHarness.Tiny().Layers * TrainingHarness.Tiny().Channels * TrainingHarness.Tiny().Channels);
    }

    [Fact]
    public void TrainBenchmarkPastItsBudgetSkipsAndSaysSo()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var report = TrainBenchmark.Run(backend, "tiny", TrainingHarness.Tiny(), [1, 2], seq: 8, microBatchCounts: [1], steps: 1, warmup: 0, budgetSeconds: 0);
        Assert.Equal(6, report.Results.Count);
        Assert.All(report.Results, r => Assert.StartsWith("skipped: over the", r.Error));
    }

    [Fact]
    public void TrainBenchmarkRunsBert()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var report = TrainBenchmark.Run(backend, "bert", BertHarness.Tiny(), microBatchSize: 2, seq: 8, microBatchCounts: [1, 2], steps: 1, warmup: 0);
        Assert.Equal(6, report.Results.Count);
        Assert.All(report.Results, r => Assert.True(r.Error is null && r.TokensPerSecond > 0 && r.DevicePeakBytes > 0));
        Assert.Single(report.Results.Where(r => r.Stash == "host").Select(r => r.DevicePeakBytes).Distinct());
        Assert.Equal(BertHarness.Tiny().ParameterCount, report.Parameters);
    }

    [Fact]
    public void BusBenchmarkMovesTheWholeBufferBothWays()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var report = BusBenchmark.Run(backend, bytes: 1 << 16, repeats: 1);
        Assert.Equal(1 << 16, report.Bytes);
        Assert.True(report.HostToDeviceBytesPerS > 0 && report.DeviceToHostBytesPerS > 0);
        Assert.Equal(0, backend.Memory.CurrentBytes);
    }

    [Fact]
    public void AttentionBenchmarkTimesBothPassesAndCountsItsWorkspace()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var report = AttentionBenchmark.Run(backend, [(2, 5, 8, 2)], repeats: 1);
        var r = Assert.Single(report.Results);
        Assert.True(r.ForwardMs > 0 && r.BackwardMs > 0 && r.Tflops > 0);
        Assert.Equal("rows", r.Path);
        Assert.Equal((2 * 5 * 8 + 2 * 2 * 5 * 2) * 4L, r.WorkspaceBytes); // output, lse and the backward's delta
        Assert.Equal(0, backend.Memory.CurrentBytes);
    }
}

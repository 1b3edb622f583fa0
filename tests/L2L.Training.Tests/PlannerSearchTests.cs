// The search: every split of the batch is tried, the pick fits its budget and trains under it, and costs fold the repeated block.
using L2L.Backends;
using L2L.Model;
using L2L.Training.Optim;
using L2L.Training.Planning;
using L2L.TestSupport;
using Xunit;

namespace L2L.Training.Tests;

public sealed class PlannerSearchTests(BackendFixture fixture)
{
    private static PlanSpace Space(IModelConfig config, int batch, DeviceShape device) =>
        new(config, batch, 8, OptimizerKind.AdamW, null, Update.UpdateMode.Eager, StatePrecision.Fp32, 256, device);

    [Fact]
    public void ThePickFitsItsBudgetAndTrainsUnderIt()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var shape = DeviceShape.Of(backend.Accelerator);
        var model = new StepTimeModel(DeviceCalibration.Defaults("test", isCpu: true));
        var everything = PlanSearch.Search(Space(TrainingHarness.Tiny(3), 6, shape), long.MaxValue, null, model);
        // 4 divisors of 6, each with conventional and 2 placements x 4 codecs.
        Assert.Equal(4 * 9, everything.Candidates.Count);
        var peaks = everything.Candidates.Select(c => c.Plan.DevicePeakBytes).Order().ToArray();
        var budget = peaks[peaks.Length / 3];
        var result = PlanSearch.Search(Space(TrainingHarness.Tiny(3), 6, shape), budget, null, model);
        var pick = Assert.IsType<PlanCandidate>(result.Pick);
        Assert.True(pick.Plan.DevicePeakBytes <= budget);
        Assert.All(result.Candidates.Where(c => c.Fits), c => Assert.True(c.Time.Step >= pick.Time.Step));
        Assert.Contains(result.Candidates, c => !c.Fits);
        var s = pick.Plan.Settings;
        var options = new TrainOptions
        {
            Config = s.Config, Steps = 1, Batch = s.Batch, MicroBatches = s.MicroBatches, SeqLen = s.SeqLen,
            Optimizer = new OptimizerSettings(OptimizerKind.AdamW, 1e-3f), Executor = s.Executor, Stash = s.Stash, StashCodec = s.Codec.Codec,
            DeviceBudgetBytes = budget, OptimizerThreads = 2,
        };
        var run = TrainingHarness.Run(backend, options);
        Assert.Equal(pick.Plan.DevicePeakBytes, run.Metrics[^1].DevicePeakBytes);
        backend.Memory.BudgetBytes = null;
    }

    [Fact]
    public void NothingFitsGivesNoPickAndTheSmallestConfiguration()
    {
        var shape = new DeviceShape(true, 2, 2, 2);
        var result = PlanSearch.Search(Space(TrainingHarness.Tiny(2), 4, shape), 1000, null, new StepTimeModel(DeviceCalibration.Defaults("test", true)));
        Assert.Null(result.Pick);
        Assert.Equal(result.Candidates.Min(c => c.Plan.DevicePeakBytes), result.Smallest.Plan.DevicePeakBytes);
        Assert.Equal(StashPlacement.Host, result.Smallest.Plan.Settings.Stash);
    }

    [Fact]
    public void TheRepeatedBlockIsCostedOncePerMicroBatchShapeAndTimesScaleWithDepth()
    {
        var shape = new DeviceShape(false, 1 << 16, 1024, 32);
        var speeds = DeviceCalibration.Defaults("test", false);
        var model = new StepTimeModel(speeds);
        var xl = PlanSearch.Search(Space(ModelConfigs.Preset("gpt2-xl"), 8, shape), 16L << 30, null, model);
        Assert.Equal(4, xl.BlocksCosted); // micro-batch sizes 1, 2, 4, 8: 48 layers and 9 configurations each, one costing per size
        var one = new StepTimeModel(speeds).Block(xl.Candidates[0].Plan.Settings);
        Assert.True(one.Forward > 0 && one.Backward > one.Forward);
    }

    [Theory]
    [InlineData("16GiB", 16L << 30)]
    [InlineData("512MiB", 512L << 20)]
    [InlineData("24GB", 24_000_000_000L)]
    [InlineData("1.5 KiB", 1536L)]
    [InlineData("4096", 4096L)]
    public void SizesParse(string text, long bytes) => Assert.Equal(bytes, PlanSearch.ParseBytes(text));

    [Fact]
    public void CalibrationRoundTripsThroughItsCacheFile()
    {
        var dir = Directory.CreateTempSubdirectory("l2l-calibration-");
        var old = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        try
        {
            Environment.SetEnvironmentVariable("XDG_CACHE_HOME", dir.FullName);
            var speeds = DeviceCalibration.Defaults("cpu: Test Device (1.00 GiB)", true) with { Measured = true, Gemm = [new(32, 1e9), new(256, 3e9)] };
            var path = speeds.Save();
            Assert.StartsWith(Path.Combine(dir.FullName, "l2l", "calibration"), path);
            var loaded = DeviceCalibration.Load("cpu: Test Device (1.00 GiB)");
            Assert.NotNull(loaded);
            Assert.Equal(speeds.Gemm, loaded.Gemm);
            Assert.Equal(speeds with { Gemm = loaded.Gemm }, loaded);
            Assert.Equal(2e9, loaded.GemmFlopsPerS(90, 90, 90), 2e7); // log-interpolated halfway between 32 and 256
            Assert.Null(DeviceCalibration.Load("cpu: Another Device (1.00 GiB)"));
        }
        finally
        {
            Environment.SetEnvironmentVariable("XDG_CACHE_HOME", old);
            dir.Delete(true);
        }
    }
}

public sealed class PlannerProfileTests(BackendFixture fixture)
{
    [Fact]
    public void AProfiledBlockReplacesTheAnalyticCostAtItsShapeOnly()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var config = TrainingHarness.Tiny(3);
        var timing = BlockProfile.Measure(backend, config, 2, 8, repeats: 1);
        Assert.Equal(BlockProfile.ModelKey(config), timing.Model);
        Assert.Equal(BlockProfile.ModelKey(config.WithLayers(7)), timing.Model); // depth does not change a block
        Assert.NotEqual(BlockProfile.ModelKey(TrainingHarness.Tiny(3) with { Channels = 32 }), timing.Model);
        Assert.True(timing.BlockForward > 0 && timing.BlockBackward > 0 && timing.Head > 0 && timing.Embedding > 0);
        Assert.Equal(0, backend.Memory.CurrentBytes); // the profile's buffers are released

        var speeds = DeviceCalibration.Defaults("test", true) with { Measured = true, Blocks = [timing with { BlockForward = 0.5, BlockBackward = 1.5 }] };
        var model = new StepTimeModel(speeds);
        var shape = DeviceShape.Of(backend.Accelerator);
        var settings = new PlanSettings(config, 2, 3, 8, ExecutorKind.Relay, StashPlacement.Device, new Stash.StashCodecSettings(),
            OptimizerKind.AdamW, Update.UpdateLocation.Device, Update.UpdateMode.Eager, StatePrecision.Fp32, shape);
        Assert.Equal((0.5, 1.5), model.Block(settings));
        var unprofiled = model.Block(settings with { MicroBatchSize = 1, MicroBatches = 6 });
        Assert.NotEqual((0.5, 1.5), unprofiled);
        // The relay runs each block forward twice (forward, recomputation) and backward once, per micro-batch.
        var time = model.Predict(Planner.Plan(settings));
        Assert.True(time.Compute >= 3 * 3 * (0.5 + 0.5 + 1.5));
    }
}

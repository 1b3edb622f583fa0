// `l2l plan --json` equals what `l2l train` then measures; `--plan auto` trains its pick within the budget or fails before allocating.
using System.Text.Json;
using L2L.TestSupport;
using Xunit;

namespace L2L.Cli.Tests;

public sealed class PlanCommandTests(BackendFixture fixture)
{
    [Theory]
    [InlineData("--config @/tiny.json --batch 4 --micro-batches 2 --seq 8 --stash host --stash-codec int8")]
    [InlineData("--config @/tiny.json --batch 3 --micro-batches 3 --seq 8 --executor conventional --optimizer sgd")]
    [InlineData("--model bert-tiny --batch 2 --micro-batches 2 --seq 16 --stash host --embedding-update host")]
    [InlineData("--config @/tiny.json --batch 2 --micro-batches 1 --seq 8 --stash-codec int4 --stash-group 32 --optimizer lamb")]
    public void PlanJsonEqualsWhatTrainMeasures(string settings)
    {
        using var ws = Workspace.Create(fixture);
        var plan = ws.Run(fixture, $"plan {settings} --device cpu --json");
        Assert.True(plan.ExitCode == 0, plan.Error);
        Assert.Equal(0, plan.BackendRequests); // planning touches no device memory
        var train = ws.Run(fixture, $"train {settings} --device cpu --steps 1 --log @/plan-check.jsonl");
        Assert.True(train.ExitCode == 0, train.Error);
        using var predicted = JsonDocument.Parse(plan.Out);
        using var measured = JsonDocument.Parse(File.ReadAllLines(ws["plan-check.jsonl"])[^1]);
        var p = predicted.RootElement;
        var m = measured.RootElement;
        Assert.Equal(m.GetProperty("device_peak_bytes").GetInt64(), p.GetProperty("device_peak_bytes").GetInt64());
        foreach (var category in m.GetProperty("device_peak_bytes_by_category").EnumerateObject())
            Assert.Equal(category.Value.GetInt64(), p.GetProperty("device_peak_bytes_by_category").GetProperty(category.Name).GetInt64());
        Assert.Equal(m.GetProperty("host_bytes").GetInt64(), p.GetProperty("host_bytes").GetInt64());
        var bus = p.GetProperty("bus_bytes_per_step");
        foreach (var kind in m.GetProperty("bus_bytes_by_kind").EnumerateObject())
            Assert.Equal(kind.Value.GetInt64(), bus.GetProperty(kind.Name).GetInt64());
        Assert.Equal(m.GetProperty("bus_bytes").GetInt64(), bus.GetProperty("total").GetInt64());
    }

    [Fact]
    public void TrainPlanAutoTrainsThePickWithinTheBudget()
    {
        using var ws = Workspace.Create(fixture);
        // A budget the default configuration (2 micro-batches, device stash, FP32) does not fit.
        var search = ws.Run(fixture, "plan --config @/tiny.json --batch 4 --seq 8 --device cpu --json");
        using var all = JsonDocument.Parse(search.Out);
        var peaks = all.RootElement.GetProperty("candidates").EnumerateArray().Select(c => c.GetProperty("device_peak_bytes").GetInt64()).Order().ToArray();
        var budget = peaks[peaks.Length / 2];
        var planned = ws.Run(fixture, $"plan --config @/tiny.json --batch 4 --seq 8 --device cpu --device-memory {budget} --json");
        using var within = JsonDocument.Parse(planned.Out);
        var pick = within.RootElement.GetProperty("pick");
        Assert.True(pick.GetProperty("device_peak_bytes").GetInt64() <= budget);
        var train = ws.Run(fixture, $"train --config @/tiny.json --batch 4 --seq 8 --device cpu --steps 1 --plan auto --device-budget {budget} --log @/auto.jsonl");
        Assert.True(train.ExitCode == 0, train.Error);
        Assert.Contains("plan: ", train.Out);
        Assert.Contains("the fastest predicted", train.Out);
        using var step = JsonDocument.Parse(File.ReadAllLines(ws["auto.jsonl"])[^1]);
        Assert.Equal(pick.GetProperty("device_peak_bytes").GetInt64(), step.RootElement.GetProperty("device_peak_bytes").GetInt64());
        Assert.True(step.RootElement.GetProperty("device_peak_bytes").GetInt64() <= budget);
    }

    [Fact]
    public void PlanAutoWithAnImpossibleBudgetFailsBeforeAllocatingAnything()
    {
        using var ws = Workspace.Create(fixture);
        var before = ws.Snapshot();
        var result = ws.Run(fixture, "train --config @/tiny.json --batch 4 --seq 8 --device cpu --steps 1 --plan auto --device-budget 1000");
        Rejected.Check(result, 1, "No configuration fits --device-budget", before, ws);
        Assert.Contains("the smallest", result.Error);
    }

    [Fact]
    public void PlanSaysWhatTheSmallestConfigurationNeedsWhenNothingFits()
    {
        using var ws = Workspace.Create(fixture);
        var result = ws.Run(fixture, "plan --config @/tiny.json --batch 4 --seq 8 --device cpu --device-memory 1KiB");
        Assert.Equal(1, result.ExitCode);
        var line = Assert.Single(result.ErrorLines);
        Assert.Matches(@"^error: No configuration fits --device-memory 1\.0 KiB: the smallest, relay, host stash, int2, 4 x 1, needs [\d,]+ bytes", line);
        Assert.Equal(0, result.BackendRequests);
    }

    [Theory]
    [InlineData("plan --device-memory lots", "--device-memory 'lots' is not a size")]
    [InlineData("plan --host-memory -3GiB", "--host-memory '-3GiB' is not a size")]
    [InlineData("plan --executor conventional --stash host", "--stash applies only to --executor relay")]
    [InlineData("plan --batch 6 --micro-batches 4", "--batch 6 is not divisible by --micro-batches 4")]
    [InlineData("plan --update-mode later", "--update-mode later is not a known update mode")]
    [InlineData("train --plan best", "--plan best is not a known plan")]
    [InlineData("train --plan auto --executor relay", "--plan and --executor cannot be used together")]
    [InlineData("train --plan auto --micro-batches 2", "--plan and --micro-batches cannot be used together")]
    public void BadPlanOptionsAreOneErrorLine(string commandLine, string expected)
    {
        using var ws = Workspace.Create(fixture);
        var before = ws.Snapshot();
        Rejected.Check(ws.Run(fixture, commandLine), 1, expected, before, ws);
    }

    [Fact]
    public void CalibrationIsCachedPerDeviceAndUsedByLaterPlans()
    {
        using var ws = Workspace.Create(fixture);
        var old = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        try
        {
            Environment.SetEnvironmentVariable("XDG_CACHE_HOME", ws["cache"]);
            var before = ws.Run(fixture, "plan --config @/tiny.json --batch 2 --seq 4 --micro-batches 1 --device cpu --json");
            using (var json = JsonDocument.Parse(before.Out))
                Assert.False(json.RootElement.GetProperty("calibrated").GetBoolean());
            var calibrated = ws.Run(fixture, "plan --config @/tiny.json --batch 2 --seq 4 --micro-batches 1 --device cpu --json --calibrate");
            Assert.True(calibrated.ExitCode == 0, calibrated.Error);
            Assert.Contains("wrote ", calibrated.Error); // with --json the calibration's lines go to stderr
            var file = Assert.Single(Directory.GetFiles(System.IO.Path.Combine(ws["cache"], "l2l", "calibration"), "cpu_*.json"));
            Assert.Contains("\"blocks\"", File.ReadAllText(file));
            using (var json = JsonDocument.Parse(calibrated.Out))
                Assert.True(json.RootElement.GetProperty("calibrated").GetBoolean());
            var later = ws.Run(fixture, "plan --config @/tiny.json --batch 2 --seq 4 --device cpu");
            Assert.True(later.ExitCode == 0, later.Error);
            Assert.Contains("this device's calibration", later.Out);
            Assert.Contains("pick: ", later.Out);
        }
        finally
        {
            Environment.SetEnvironmentVariable("XDG_CACHE_HOME", old);
        }
    }
}

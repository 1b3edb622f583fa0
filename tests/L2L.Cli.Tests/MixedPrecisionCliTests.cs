// --precision and --loss-scale on the command line: recorded, inherited on --resume, reported, and bad values are one error line.
using System.Text.Json;
using L2L.TestSupport;
using Xunit;

namespace L2L.Cli.Tests;

public sealed class MixedPrecisionCliTests(BackendFixture fixture)
{
    private const string Tiny = "--config @/tiny.json --batch 2 --micro-batches 1 --seq 4 --device cpu";

    /// <summary>The output with the console's line wrapping undone.</summary>
    private static string Flat(string output) => System.Text.RegularExpressions.Regex.Replace(output, @"\s+", " ");

    [Fact]
    public void ABf16RunIsReportedRecordedAndResumedInBf16()
    {
        using var ws = Workspace.Create(fixture);
        var run = ws.Run(fixture, $"train {Tiny} --steps 2 --precision bf16 --save @/half --log @/half.jsonl");
        Assert.True(run.ExitCode == 0, run.Error);
        Assert.Contains("| precision bf16", Flat(run.Out));
        Assert.All(File.ReadAllLines(ws["half.jsonl"]), line => Assert.Equal("bf16", JsonDocument.Parse(line).RootElement.GetProperty("precision").GetString()));

        // Resuming keeps the recorded precision without it being typed again.
        var resumed = ws.Run(fixture, "train --resume @/half --steps 3 --device cpu --save @/half");
        Assert.True(resumed.ExitCode == 0, resumed.Error);
        Assert.Contains("| precision bf16", Flat(resumed.Out));
        Assert.Equal(3, ws.CheckpointStep(ws["half"]));

        // Evaluation defaults to the precision the checkpoint was trained in.
        var eval = ws.Run(fixture, "eval --checkpoint @/half --batch 2 --seq 4 --batches 1 --device cpu");
        Assert.True(eval.ExitCode == 0, eval.Error);
        Assert.Equal("bf16", JsonDocument.Parse(eval.Out).RootElement.GetProperty("precision").GetString());
        var eval32 = ws.Run(fixture, "eval --checkpoint @/half --batch 2 --seq 4 --batches 1 --device cpu --precision fp32");
        Assert.True(eval32.ExitCode == 0, eval32.Error);
        Assert.Equal("fp32", JsonDocument.Parse(eval32.Out).RootElement.GetProperty("precision").GetString());
    }

    [Fact]
    public void ChangingTheRecordedPrecisionOnResumeNeedsAnOverride()
    {
        using var ws = Workspace.Create(fixture);
        var before = ws.Snapshot();
        var result = ws.Run(fixture, "train --resume @/ck --steps 3 --precision bf16 --device cpu");
        Assert.NotEqual(0, result.ExitCode);
        var line = Assert.Single(result.ErrorLines);
        Assert.Contains("precision", line);
        Assert.Contains("--override precision", line);
        Assert.Equal(before, ws.Snapshot());
        var allowed = ws.Run(fixture, "train --resume @/ck --steps 3 --precision bf16 --override precision --device cpu");
        Assert.True(allowed.ExitCode == 0, allowed.Error);
        Assert.Contains("| precision bf16", Flat(allowed.Out));
    }

    [Theory]
    [InlineData("--precision fp8", "--precision fp8")]
    [InlineData("--loss-scale lots", "--loss-scale lots is not a loss scale")]
    [InlineData("--loss-scale -4", "--loss-scale -4 is not a loss scale")]
    [InlineData("--loss-scale 0", "--loss-scale 0 is not a loss scale")]
    [InlineData("--precision fp16 --devices cpu*2 --micro-batches 2", "--precision fp16 is not implemented for data parallel training")]
    public void BadPrecisionOrLossScaleIsOneErrorLine(string args, string expected)
    {
        using var ws = Workspace.Create(fixture);
        var before = ws.Snapshot();
        var result = ws.Run(fixture, $"train --config @/tiny.json --batch 2 --seq 4 --steps 1 {(args.Contains("--devices") ? "" : "--device cpu ")}{args}");
        Assert.NotEqual(0, result.ExitCode);
        var line = Assert.Single(result.ErrorLines);
        Assert.Contains(expected, line);
        Assert.Equal(before, ws.Snapshot());
    }

    [Fact]
    public void Bf16TrainsOnTwoDevices()
    {
        using var ws = Workspace.Create(fixture);
        var result = ws.Run(fixture, "train --config @/tiny.json --batch 4 --micro-batches 2 --seq 4 --steps 2 --devices cpu*2 --precision bf16 --log @/two.jsonl");
        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Contains("| precision bf16", Flat(result.Out));
        Assert.All(File.ReadAllLines(ws["two.jsonl"]), line => Assert.Equal(2, JsonDocument.Parse(line).RootElement.GetProperty("devices").GetInt32()));
    }

    [Fact]
    public void AnOverflowingFp16ScaleIsReportedOnEveryStepLine()
    {
        using var ws = Workspace.Create(fixture);
        var result = ws.Run(fixture, $"train {Tiny} --steps 2 --precision fp16 --loss-scale 1e30 --log @/over.jsonl --save @/over");
        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Contains("| loss scale 1E+30 |", Flat(result.Out));
        Assert.Contains("overflowed, not updated:", Flat(result.Out));
        foreach (var line in File.ReadAllLines(ws["over.jsonl"]))
            Assert.NotEmpty(JsonDocument.Parse(line).RootElement.GetProperty("overflowed_layers").EnumerateArray());
    }

    /// <summary>
    /// The main job (the README's Quick start command: built-in data, default settings) in bf16 ends within 3% of the same
    /// job in fp32. Both runs are made here, 200 steps each.
    /// </summary>
    [Fact]
    public void TheMainJobInBf16EndsWithin3PercentOfFp32()
    {
        using var ws = Workspace.Create(fixture);
        var fp32 = ws.Run(fixture, "train --device cpu --log @/fp32.jsonl");
        Assert.True(fp32.ExitCode == 0, fp32.Error);
        var bf16 = ws.Run(fixture, "train --device cpu --precision bf16 --log @/bf16.jsonl");
        Assert.True(bf16.ExitCode == 0, bf16.Error);
        static double Final(string path) => JsonDocument.Parse(File.ReadAllLines(path)[^1]).RootElement.GetProperty("loss").GetDouble();
        var (a, b) = (Final(ws["fp32.jsonl"]), Final(ws["bf16.jsonl"]));
        Assert.True(Math.Abs(b - a) / a < 0.03, $"final loss fp32 {a:F4}, bf16 {b:F4}");
        Assert.Equal(200, File.ReadAllLines(ws["bf16.jsonl"]).Length);
    }
}

// Strict resume: recorded settings are inherited, changes need --override, a finished run trains nothing, the log never repeats a step.
using L2L.TestSupport;
using Xunit;

namespace L2L.Cli.Tests;

public sealed class ResumeTests(BackendFixture fixture)
{
    [Fact]
    public void ResumingInheritsTheRecordedSettingsAndContinuesTheLog()
    {
        using var ws = Workspace.Create(fixture);
        // Nothing but the target: batch, seq, lr, seed, shuffle... come from the checkpoint.
        var result = ws.Run(fixture, "train --resume @/ck --steps 3 --device cpu --save @/ck --log @/metrics.jsonl");
        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Equal("", result.Error);
        Assert.Contains("batch 2 = 1 x 2, seq 4", result.Out);
        Assert.Contains("lr 0.01", result.Out);
        Assert.Equal(3, ws.CheckpointStep(ws["ck"]));
        Assert.Equal([1L, 2, 3], Workspace.LoggedSteps(ws["metrics.jsonl"]));
    }

    [Fact]
    public void OverrideLetsARecordedSettingChangeAndSaysSo()
    {
        using var ws = Workspace.Create(fixture);
        var result = ws.Run(fixture, "train --resume @/ck --steps 3 --lr 0.02 --override lr --device cpu --save @/ck");
        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Contains("note: --lr changed from 0.01 (in the checkpoint) to 0.02, as --override lr allows.", result.Out);
        Assert.Contains("lr 0.02", result.Out);
        // The new checkpoint records the new value, so the next resume needs no override.
        var again = ws.Run(fixture, "train --resume @/ck --steps 4 --lr 0.02 --device cpu");
        Assert.True(again.ExitCode == 0, again.Error);
    }

    [Theory]
    [InlineData("--steps 2")]
    [InlineData("--steps 1")]
    [InlineData("")] // the recorded target, 2
    public void ResumingAtOrPastTheTargetTrainsNothingAndSavesNothing(string steps)
    {
        using var ws = Workspace.Create(fixture);
        var before = ws.Snapshot();
        var result = ws.Run(fixture, $"train --resume @/ck {steps} --save @/ck --log @/metrics.jsonl --plot @/loss.png");
        Assert.Equal(0, result.ExitCode);
        Assert.Equal("", result.Error);
        var line = Assert.Single(result.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith($"checkpoint '{ws["ck"]}' is already at step 2, at or past --steps", line);
        Assert.Contains("nothing to train, nothing saved", line);
        Assert.DoesNotContain("saved checkpoint", result.Out);
        Assert.Equal(0, result.BackendRequests);
        Assert.Equal(before, ws.Snapshot());
    }

    [Fact]
    public void ResumeDropsLoggedStepsPastTheCheckpoint()
    {
        using var ws = Workspace.Create(fixture);
        // A run that went on past its last save (to step 3) before it was killed.
        var log = ws["metrics.jsonl"];
        File.AppendAllText(log, File.ReadLines(log).Last().Replace("\"step\":2", "\"step\":3", StringComparison.Ordinal) + "\n");
        Assert.Equal([1L, 2, 3], Workspace.LoggedSteps(log));
        var result = ws.Run(fixture, "train --resume @/ck --steps 4 --device cpu --log @/metrics.jsonl");
        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Equal([1L, 2, 3, 4], Workspace.LoggedSteps(log));
    }

    [Fact]
    public void ACosineScheduleHoldsTheStepTarget()
    {
        using var ws = Workspace.Create(fixture);
        Assert.Equal(0, ws.Run(fixture, "train --config @/tiny.json --steps 2 --batch 2 --seq 4 --schedule cosine --device cpu --save @/cos").ExitCode);
        var before = ws.Snapshot();
        var result = ws.Run(fixture, "train --resume @/cos --steps 4 --device cpu");
        Rejected.Check(result, 1, "--steps 4 differs from the 2 that checkpoint", before, ws);
        Assert.Equal(0, ws.Run(fixture, "train --resume @/cos --steps 3 --override steps --device cpu").ExitCode);
    }

    [Theory]
    [InlineData("--executor conventional", "--stash host", "--stash applies only to --executor relay")]
    [InlineData("--executor conventional", "--optimizer-threads 1", "--optimizer-threads applies only to --executor relay")]
    [InlineData("--optimizer sgd --lr 0.1", "--beta1 0.8", "--beta1 applies only to --optimizer adamw or lamb")]
    public void OptionsThatDoNotApplyToTheInheritedSettingsAreRejected(string recorded, string typed, string expected)
    {
        using var ws = Workspace.Create(fixture);
        Assert.Equal(0, ws.Run(fixture, $"train --config @/tiny.json --steps 1 --batch 2 --seq 4 {recorded} --device cpu --save @/other").ExitCode);
        var before = ws.Snapshot();
        Rejected.Check(ws.Run(fixture, $"train --resume @/other --steps 2 {typed} --device cpu"), 1, expected, before, ws);
    }
}

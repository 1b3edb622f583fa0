// --unit-scaling on train: a fresh unit-scaled GPT-2 trains, its checkpoint records the flag, and the other kind of model is one clear error.
using L2L.TestSupport;
using Xunit;

namespace L2L.Cli.Tests;

public sealed class UnitScalingCliTests(BackendFixture fixture)
{
    [Fact]
    public void UnitScaledRunRecordsTheFlagAndResumesAsUnitScaled()
    {
        using var ws = Workspace.Create(fixture);
        var result = ws.Run(fixture, "train --config @/tiny.json --unit-scaling --steps 2 --batch 2 --micro-batches 1 --seq 4 --device cpu --save @/unit");
        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Contains("| unit-scaled |", result.Out);
        Assert.Contains("\"unit_scaling\": true", File.ReadAllText(Path.Combine(ws["unit"], "config.json")));

        // Resuming keeps the recorded model without the flag being typed again.
        var resumed = ws.Run(fixture, "train --resume @/unit --steps 3 --device cpu --save @/unit");
        Assert.True(resumed.ExitCode == 0, resumed.Error);
        Assert.Contains("| unit-scaled |", resumed.Out);
        Assert.Equal(3, ws.CheckpointStep(ws["unit"]));
    }

    [Theory]
    [InlineData("train --init @/ck --unit-scaling --steps 1 --device cpu", "holds a standard GPT-2, but --unit-scaling asks for a unit-scaled one")]
    [InlineData("train --resume @/ck --unit-scaling --steps 3 --device cpu", "holds a standard GPT-2, but --unit-scaling asks for a unit-scaled one")]
    [InlineData("train --model bert-tiny --unit-scaling --steps 1 --device cpu", "--model bert-tiny is not a GPT-2 preset")]
    public void TheOtherKindOfModelIsOneErrorLine(string commandLine, string expected)
    {
        using var ws = Workspace.Create(fixture);
        var before = ws.Snapshot();
        var result = ws.Run(fixture, commandLine);
        Assert.NotEqual(0, result.ExitCode);
        var line = Assert.Single(result.ErrorLines);
        Assert.Contains(expected, line);
        Assert.Equal(before, ws.Snapshot());
    }

    [Fact]
    public void AUnitScaledCheckpointIsNotLoadedAsAStandardModel()
    {
        using var ws = Workspace.Create(fixture);
        var saved = ws.Run(fixture, "train --config @/tiny.json --unit-scaling --steps 1 --batch 2 --micro-batches 1 --seq 4 --device cpu --save @/unit");
        Assert.True(saved.ExitCode == 0, saved.Error);
        var result = ws.Run(fixture, "train --init @/unit --config @/tiny.json --steps 1 --batch 2 --micro-batches 1 --seq 4 --device cpu");
        Assert.NotEqual(0, result.ExitCode);
        var line = Assert.Single(result.ErrorLines);
        Assert.Contains("holds a unit-scaled GPT-2", line);
        Assert.Contains("a standard model was asked for", line);
    }
}

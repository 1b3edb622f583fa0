// `l2l train --stash-codec adaptive`: the header describes the choice, every metrics line carries the bits per level,
// and the budget and interval are recorded in the checkpoint and held to on resume.
using System.Text.Json;
using L2L.Model;
using L2L.Training;
using L2L.Training.Stash;
using L2L.TestSupport;
using Xunit;

namespace L2L.Cli.Tests;

public sealed class AdaptiveStashCliTests(BackendFixture fixture)
{
    private const string Adaptive = "train --config @/tiny.json --steps 3 --batch 2 --micro-batches 1 --seq 4 --lr 0.01 --device cpu " +
        "--stash-codec adaptive --stash-bits-budget 3 --stash-adapt-every 2 --stash-group 16 --log @/adaptive.jsonl --save @/adaptive";

    [Fact]
    public void TheRunReportsTheBitsAndRecordsTheSettings()
    {
        using var ws = Workspace.Create(fixture);
        var result = ws.Run(fixture, Adaptive);
        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Contains("stash codec: adaptive, groups of 16: 8, 4 or 2 bits per stash level", result.Out);
        Assert.Contains("at most 6 bits over 2 levels (budget 3 on average), re-estimated at every step that is a multiple of 2", result.Out);
        // Equal weights before any estimate: 4 bits for one level, 2 for the other.
        Assert.Contains("bits before the first estimate: [2,4]", result.Out);
        Assert.Contains("stash bits [", result.Out);
        var lines = File.ReadAllLines(ws["adaptive.jsonl"]);
        Assert.Equal(3, lines.Length);
        foreach (var line in lines)
        {
            using var json = JsonDocument.Parse(line);
            var bits = json.RootElement.GetProperty("stash_bits").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            Assert.Equal(2, bits.Length);
            Assert.True(bits.Sum() <= 6);
        }
        var dir = ws["adaptive"];
        var recorded = Checkpoint.LoadTrainingState(dir, new ModelLayout(Checkpoint.Load(dir).Config)).Metadata;
        Assert.Equal("adaptive", recorded[RunSettings.StashCodec]);
        Assert.Equal("3", recorded[RunSettings.StashBitsBudget]);
        Assert.Equal("2", recorded[RunSettings.StashAdaptEvery]);
        Assert.Contains(AdaptiveBits.BitsKey, recorded.Keys);

        // Resume inherits them; a different budget is refused unless overridden.
        var before = ws.Snapshot();
        Rejected.Check(ws.Run(fixture, "train --resume @/adaptive --steps 4 --stash-bits-budget 4 --device cpu"), 1,
            "--stash-bits-budget 4 differs from the 3 that checkpoint", before, ws);
        var resumed = ws.Run(fixture, "train --resume @/adaptive --steps 4 --device cpu");
        Assert.True(resumed.ExitCode == 0, resumed.Error);
        Assert.Contains("budget 3 on average", resumed.Out);
        Assert.Contains($"bits of the first step, from the checkpoint: [{recorded[AdaptiveBits.BitsKey]}]", resumed.Out);
        Assert.DoesNotContain("note:", resumed.Out);
    }
}

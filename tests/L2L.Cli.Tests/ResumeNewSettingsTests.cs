// Strict resume for the newer trajectory settings (clipping, dropout, update mode, stash codec...): inherited, refused, noted, and absent in older checkpoints.
using L2L.Model;
using L2L.Training;
using L2L.TestSupport;
using Xunit;

namespace L2L.Cli.Tests;

public sealed class ResumeNewSettingsTests(BackendFixture fixture)
{
    private const string Clipped = "train --config @/tiny.json --steps 2 --batch 2 --micro-batches 1 --seq 4 --lr 0.01 --clip-grad-norm 0.5 --dropout 0.2 --device cpu --save @/clip";

    private static Workspace WithClippedCheckpoint(BackendFixture fixture)
    {
        var ws = Workspace.Create(fixture);
        var result = ws.Run(fixture, Clipped);
        Assert.True(result.ExitCode == 0, result.Error);
        return ws;
    }

    private static IReadOnlyDictionary<string, string> Recorded(string dir) =>
        Checkpoint.LoadTrainingState(dir, new ModelLayout(Checkpoint.Load(dir).Config)).Metadata;

    [Fact]
    public void TheCheckpointRecordsTheEffectiveValues()
    {
        using var ws = WithClippedCheckpoint(fixture);
        var recorded = Recorded(ws["clip"]);
        Assert.Equal("0.5", recorded[RunSettings.ClipGradNorm]);
        Assert.Equal("global", recorded[RunSettings.ClipMode]);
        Assert.Equal("deferred", recorded[RunSettings.UpdateMode]); // resolved: global clipping defers updates
        Assert.Equal("0.2", recorded[RunSettings.Dropout]);
        Assert.Equal("none", recorded[RunSettings.Freeze]);
        Assert.Equal("none", recorded[RunSettings.LossScale]);
        Assert.Equal("none", recorded[RunSettings.StashCodec]);
        Assert.Equal("fp32", recorded[RunSettings.OptimizerState]);
        Assert.Equal("device", recorded[RunSettings.EmbeddingUpdate]);
        Assert.Equal("0", recorded[RunSettings.LayerDrop]);
        // The template checkpoint trained without clipping records "none", and its loss scale is kept apart from the scaler's own key.
        Assert.Equal("none", Recorded(ws["ck"])[RunSettings.ClipGradNorm]);
        Assert.DoesNotContain("loss_scale", Recorded(ws["ck"]).Keys);
    }

    [Fact]
    public void ResumeInheritsTheClipNormAndDropoutWhenNotTyped()
    {
        using var ws = WithClippedCheckpoint(fixture);
        var result = ws.Run(fixture, "train --resume @/clip --steps 3 --device cpu --save @/clip");
        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Equal("", result.Error);
        Assert.Contains("deferred updates", result.Out);
        Assert.Contains("clip global norm 0.5", result.Out);
        Assert.Contains("dropout embd 0.2 resid 0.2", result.Out);
        Assert.DoesNotContain("note:", result.Out);
        Assert.Equal("0.5", Recorded(ws["clip"])[RunSettings.ClipGradNorm]);
    }

    [Fact]
    public void ADifferentClipNormIsRefusedUnlessOverridden()
    {
        using var ws = WithClippedCheckpoint(fixture);
        var before = ws.Snapshot();
        var refused = ws.Run(fixture, "train --resume @/clip --steps 3 --clip-grad-norm 1 --device cpu");
        Rejected.Check(refused, 1, "--clip-grad-norm 1 differs from the 0.5 that checkpoint", before, ws);
        Assert.Contains("add --override clip-grad-norm", refused.Error);

        var result = ws.Run(fixture, "train --resume @/clip --steps 3 --clip-grad-norm 1 --override clip-grad-norm --device cpu --save @/clip");
        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Contains("note: --clip-grad-norm changed from 0.5 (in the checkpoint) to 1, as --override clip-grad-norm allows.", result.Out);
        Assert.Contains("clip global norm 1", result.Out);
        Assert.Equal("1", Recorded(ws["clip"])[RunSettings.ClipGradNorm]);
    }

    [Theory]
    [InlineData("--dropout 0.1", "--dropout 0.1 differs from the 0.2 that checkpoint")]
    [InlineData("--layer-drop 0.5", "--layer-drop 0.5 differs from the 0 that checkpoint")]
    [InlineData("--freeze 0", "--freeze 0 differs from the none that checkpoint")]
    [InlineData("--stash-codec int8", "--stash-codec int8 differs from the none that checkpoint")]
    [InlineData("--optimizer-state bf16", "--optimizer-state bf16 differs from the fp32 that checkpoint")]
    [InlineData("--update-mode eager --clip-mode layer", "--update-mode eager differs from the deferred that checkpoint")]
    public void OtherTypedChangesAreRefused(string typed, string expected)
    {
        using var ws = WithClippedCheckpoint(fixture);
        var before = ws.Snapshot();
        Rejected.Check(ws.Run(fixture, $"train --resume @/clip --steps 3 {typed} --device cpu"), 1, expected, before, ws);
    }

    [Fact]
    public void OverrideListsTheNewNames()
    {
        using var ws = Workspace.Create(fixture);
        var before = ws.Snapshot();
        var result = ws.Run(fixture, "train --resume @/ck --override clip-norm");
        Rejected.Check(result, 1, "--override 'clip-norm' is not a setting a checkpoint records. Use one of:", before, ws);
        foreach (var name in new[] { "update-mode", "clip-grad-norm", "clip-mode", "loss-scale", "dropout", "layer-drop", "freeze", "optimizer-state", "stash-codec", "stash-group", "embedding-update", "stash-bits-budget", "stash-adapt-every" })
            Assert.Contains(name, result.Error);
    }

    [Fact]
    public void AnEmbeddingUpdateChangeIsAllowedWithANote()
    {
        using var ws = Workspace.Create(fixture);
        var result = ws.Run(fixture, "train --resume @/ck --steps 3 --embedding-update host --device cpu --save @/ck");
        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Contains("note: --embedding-update changed from device (in the checkpoint) to host; this moves the embedding and head update between device and host, which changes results only by rounding.", result.Out);
        Assert.Equal("host", Recorded(ws["ck"])[RunSettings.EmbeddingUpdate]);
        // Not typed again: the recorded host is inherited, with no note.
        var again = ws.Run(fixture, "train --resume @/ck --steps 4 --device cpu --save @/ck");
        Assert.True(again.ExitCode == 0, again.Error);
        Assert.DoesNotContain("note:", again.Out);
        Assert.Equal("host", Recorded(ws["ck"])[RunSettings.EmbeddingUpdate]);
    }

    [Fact]
    public void AnOlderCheckpointWithoutTheKeysResumesWithTheOptions()
    {
        using var ws = WithClippedCheckpoint(fixture);
        // Rewrite the checkpoint as one written before these keys existed.
        var dir = ws["clip"];
        var (config, weights) = Checkpoint.Load(dir);
        var layout = new ModelLayout(config);
        var state = Checkpoint.LoadTrainingState(dir, layout);
        string[] newer = [RunSettings.UpdateMode, RunSettings.ClipGradNorm, RunSettings.ClipMode, RunSettings.LossScale, RunSettings.Dropout, RunSettings.LayerDrop,
            RunSettings.Freeze, RunSettings.OptimizerState, RunSettings.StashCodec, RunSettings.StashGroup, RunSettings.EmbeddingUpdate,
            RunSettings.StashBitsBudget, RunSettings.StashAdaptEvery];
        var old = state.Metadata.Where(kv => !newer.Contains(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value);
        Checkpoint.Save(dir, layout, weights, state with { Metadata = old });
        Assert.DoesNotContain(RunSettings.ClipGradNorm, Recorded(dir).Keys);

        // Nothing recorded to inherit: the options' defaults apply (no clipping, the config's dropout) and nothing is refused.
        var plain = ws.Run(fixture, "train --resume @/clip --steps 3 --device cpu");
        Assert.True(plain.ExitCode == 0, plain.Error);
        Assert.DoesNotContain("clip global", plain.Out);
        Assert.DoesNotContain("note:", plain.Out);
        var typed = ws.Run(fixture, "train --resume @/clip --steps 3 --clip-grad-norm 1 --dropout 0.1 --device cpu --save @/clip");
        Assert.True(typed.ExitCode == 0, typed.Error);
        Assert.Contains("clip global norm 1", typed.Out);
        Assert.Contains("dropout embd 0.1 resid 0.1", typed.Out);
        Assert.DoesNotContain("note:", typed.Out);
        // The next save records them.
        Assert.Equal("1", Recorded(dir)[RunSettings.ClipGradNorm]);
        Assert.Equal("0.1", Recorded(dir)[RunSettings.Dropout]);
    }
}

// Leftovers of a checkpoint save interrupted mid-swap are recovered or removed at the next load or save, with a note.
using L2L.TestSupport;
using Xunit;

namespace L2L.Cli.Tests;

public sealed class CheckpointSwapTests(BackendFixture fixture)
{
    [Fact]
    public void AMissingCheckpointIsRecoveredFromItsOldCopy()
    {
        using var ws = Workspace.Create(fixture);
        var before = ws.Snapshot();
        // Killed between renaming the old checkpoint aside and renaming the new one in.
        Directory.Move(ws["ck"], ws[".ck.old-0123"]);
        Directory.CreateDirectory(ws[".ck.new-4567"]);
        File.WriteAllText(Path.Combine(ws[".ck.new-4567"], "config.json"), "{");
        var result = ws.Run(fixture, "train --resume @/ck");
        Assert.Equal(0, result.ExitCode); // at its recorded target: nothing to train
        Assert.Contains($"note: recovered checkpoint '{ws["ck"]}' from '{ws[".ck.old-0123"]}'", result.Out);
        Assert.Contains($"note: removed '{ws[".ck.new-4567"]}', left by an interrupted checkpoint save.", result.Out);
        Assert.Equal(before, ws.Snapshot());
    }

    [Fact]
    public void StaleCopiesBesideACheckpointAreRemovedAtTheNextSave()
    {
        using var ws = Workspace.Create(fixture);
        Directory.CreateDirectory(ws[".ck.old-89ab"]);
        Directory.CreateDirectory(ws[".ck.new-cdef"]);
        var result = ws.Run(fixture, "train --resume @/ck --steps 3 --save @/ck --device cpu");
        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Contains($"removed '{ws[".ck.old-89ab"]}'", result.Out);
        Assert.Contains($"removed '{ws[".ck.new-cdef"]}'", result.Out);
        Assert.Empty(Directory.GetDirectories(ws.Path, ".ck.*"));
        Assert.Equal(3, ws.CheckpointStep(ws["ck"]));
    }
}

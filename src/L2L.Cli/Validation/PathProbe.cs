// Path checks by trying: open, create or list the path (then undo it), never guessing from permission bits.
using L2L.Model;

namespace L2L.Cli.Validation;

/// <summary>Each check returns null when the path is usable, else the rest of a sentence that starts with the path, e.g. "is a directory".</summary>
public static class PathProbe
{
    /// <summary>An existing regular file that opens for reading.</summary>
    public static string? ReadableFile(string path)
    {
        if (Directory.Exists(path)) return "is a directory, not a file";
        if (!File.Exists(path)) return "does not exist";
        return Try(() => File.OpenRead(path).Dispose(), "cannot be read");
    }

    /// <summary>An existing directory whose entries can be listed.</summary>
    public static string? ReadableDirectory(string path)
    {
        if (File.Exists(path)) return "is a file, not a directory";
        if (!Directory.Exists(path)) return "does not exist";
        return Try(() => Directory.EnumerateFileSystemEntries(path).FirstOrDefault(), "cannot be read");
    }

    /// <summary>A file that can be written: an existing one opens for writing (without truncating it), a new one can be created where it would go.</summary>
    public static string? WritableFile(string path)
    {
        if (Directory.Exists(path)) return "is a directory";
        if (File.Exists(path)) return Try(() => new FileStream(path, FileMode.Open, FileAccess.Write).Dispose(), "cannot be written");
        return CreatableIn(path, probeDirectory: false);
    }

    /// <summary>A directory a checkpoint save can create or replace.</summary>
    public static string? CheckpointTarget(string path)
    {
        if (File.Exists(path))
            return "is a file, but a checkpoint is a directory. Choose a new directory, or an existing checkpoint to replace";
        if (Directory.Exists(path))
        {
            string[] entries;
            try
            {
                entries = Directory.GetFileSystemEntries(path);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return $"cannot be read ({Reason(e)}). Choose a directory you can write to";
            }
            if (entries.Length > 0 && !File.Exists(Path.Combine(path, Checkpoint.ConfigFile)))
                return $"is a directory holding {entries.Length} entr{(entries.Length == 1 ? "y" : "ies")} but no checkpoint, and a save replaces the whole directory. " +
                    "Choose a new directory, or an existing checkpoint to replace";
        }
        return CreatableIn(path, probeDirectory: true) is { } problem ? $"{problem}. Choose a directory you can write to" : null;
    }

    /// <summary>Creates (and removes) a probe beside <paramref name="path"/> in its nearest existing ancestor, which is where the path's parents would be made.</summary>
    private static string? CreatableIn(string path, bool probeDirectory)
    {
        var full = Path.GetFullPath(path).TrimEnd(Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar);
        var parent = Path.GetDirectoryName(full);
        while (parent is not null && !Directory.Exists(parent))
        {
            if (File.Exists(parent)) return $"cannot be created: '{parent}' is a file, not a directory";
            parent = Path.GetDirectoryName(parent);
        }
        if (parent is null) return "cannot be created: none of its parent directories exists";
        var probe = Path.Combine(parent, $".l2l-probe-{Guid.NewGuid():N}");
        return Try(() =>
        {
            if (probeDirectory)
            {
                Directory.CreateDirectory(probe);
                Directory.Delete(probe);
            }
            else
            {
                new FileStream(probe, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.DeleteOnClose).Dispose();
            }
        }, $"cannot be created: nothing can be written in '{parent}'");
    }

    private static string? Try(Action action, string failure)
    {
        try
        {
            action();
            return null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return $"{failure} ({Reason(e)})";
        }
    }

    private static string Reason(Exception e) => e switch
    {
        UnauthorizedAccessException => "permission denied",
        FileNotFoundException or DirectoryNotFoundException => "the file system refused it",
        _ => e.Message.TrimEnd('.'),
    };
}

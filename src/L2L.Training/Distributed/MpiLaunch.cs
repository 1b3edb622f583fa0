// Tells from the environment whether this process was started by an MPI launcher, and which MPI library to load.
namespace L2L.Training.Distributed;

/// <summary>The launcher family seen in the environment.</summary>
public enum MpiLauncher
{
    /// <summary>No launcher variables: a plain single process.</summary>
    None,

    /// <summary>Open MPI's mpirun/prterun (OMPI_COMM_WORLD_* variables).</summary>
    OpenMpi,

    /// <summary>A PMI-1/2 launcher: MPICH's Hydra mpiexec, Intel MPI, Slurm's srun with PMI (PMI_RANK / PMI_SIZE).</summary>
    Pmi,

    /// <summary>A PMIx launcher other than Open MPI's (e.g. srun --mpi=pmix): PMIX_RANK without OMPI_ variables.</summary>
    Pmix,
}

/// <summary>What the environment says about the MPI job this process belongs to.</summary>
/// <param name="Launcher">The launcher family.</param>
/// <param name="WorldSizeHint">The world size the launcher announced, if it did (checked against MPI_Comm_size after init).</param>
/// <param name="LibraryCandidates">Libraries to try, in order; the first that loads is used.</param>
public sealed record MpiLaunch(MpiLauncher Launcher, int? WorldSizeHint, IReadOnlyList<string> LibraryCandidates)
{
    /// <summary>Environment variable naming the MPI library to load (a path or a soname); it overrides the candidates below.</summary>
    public const string LibraryVariable = "L2L_MPI_LIBRARY";

    /// <summary>Open MPI 4.x and 5.x.</summary>
    public static readonly string[] OpenMpiLibraries = ["libmpi.so.40"];

    /// <summary>MPICH (libmpich.so.12) and the MPICH-ABI libraries named libmpi.so.12 (Intel MPI, Cray MPICH, MVAPICH).</summary>
    public static readonly string[] MpichLibraries = ["libmpich.so.12", "libmpi.so.12"];

    /// <summary>True when a launcher started this process (or a library was named explicitly).</summary>
    public bool IsDistributed => Launcher != MpiLauncher.None;

    /// <summary>Reads the process environment.</summary>
    public static MpiLaunch Detect() => Detect(Environment.GetEnvironmentVariable);

    /// <summary>Reads the given environment (a lookup returning null for unset variables).</summary>
    public static MpiLaunch Detect(Func<string, string?> environment)
    {
        string? forced = environment(LibraryVariable);
        MpiLauncher launcher;
        int? size;
        IReadOnlyList<string> candidates;
        if (Has(environment, "OMPI_COMM_WORLD_SIZE") || Has(environment, "OMPI_COMM_WORLD_RANK"))
        {
            launcher = MpiLauncher.OpenMpi;
            size = ParseSize(environment("OMPI_COMM_WORLD_SIZE"));
            candidates = OpenMpiLibraries;
        }
        else if (Has(environment, "PMI_RANK") || Has(environment, "PMI_SIZE"))
        {
            launcher = MpiLauncher.Pmi;
            size = ParseSize(environment("PMI_SIZE"));
            candidates = MpichLibraries;
        }
        else if (Has(environment, "PMIX_RANK"))
        {
            launcher = MpiLauncher.Pmix;
            size = null;
            candidates = [.. OpenMpiLibraries, .. MpichLibraries];
        }
        else
        {
            launcher = MpiLauncher.None;
            size = null;
            candidates = [.. OpenMpiLibraries, .. MpichLibraries];
        }
        if (!string.IsNullOrWhiteSpace(forced)) candidates = [forced.Trim()];
        return new MpiLaunch(launcher, size, candidates);
    }

    /// <summary>Loads the first candidate library that loads; one error line naming every library tried otherwise.</summary>
    public MpiLibrary LoadLibrary()
    {
        var failures = new List<string>();
        foreach (string candidate in LibraryCandidates)
        {
            try { return MpiLibrary.Load(candidate); }
            catch (MpiException e) { failures.Add(e.Message); }
        }
        throw new MpiException(
            $"No MPI library could be loaded (tried {string.Join(", ", LibraryCandidates)}); install Open MPI or MPICH, or set {LibraryVariable} to your libmpi. " +
            string.Join(" ", failures));
    }

    private static bool Has(Func<string, string?> environment, string name) => !string.IsNullOrEmpty(environment(name));

    private static int? ParseSize(string? value) => int.TryParse(value, out int n) && n > 0 ? n : null;
}

// Direct bindings to an MPI library for the two ABI families clusters run: Open MPI (pointer handles) and MPICH (integer handles).
using System.Runtime.InteropServices;
using System.Text;

namespace L2L.Training.Distributed;

/// <summary>The handle convention of an MPI library's C interface.</summary>
public enum MpiAbi
{
    /// <summary>Open MPI: communicators, datatypes and ops are pointers to exported objects (<c>ompi_mpi_comm_world</c>, …).</summary>
    OpenMpi,

    /// <summary>MPICH and its derivatives (Intel MPI, Cray MPICH, MVAPICH): handles are 32-bit integer constants from mpi.h.</summary>
    Mpich,
}

/// <summary>
/// One loaded MPI shared library and the calls L2L makes into it, bound by function pointer at load time
/// (no MPI package, no C shim). The handle type differs between the ABI families, so each has its own subclass.
/// </summary>
public abstract unsafe class MpiLibrary
{
    /// <summary>MPI_THREAD_MULTIPLE in both families' mpi.h: any thread may call MPI at any time.</summary>
    public const int ThreadMultiple = 3;

    private readonly delegate* unmanaged<int*, byte***, int, int*, int> _initThread;
    private readonly delegate* unmanaged<int*, int> _initialized;
    private readonly delegate* unmanaged<int*, int> _finalized;
    private readonly delegate* unmanaged<int> _finalize;
    private readonly delegate* unmanaged<byte*, int*, int> _getLibraryVersion;

    private protected MpiLibrary(string path, nint handle, MpiAbi abi)
    {
        Path = path;
        Handle = handle;
        Abi = abi;
        _initThread = (delegate* unmanaged<int*, byte***, int, int*, int>)Export("MPI_Init_thread");
        _initialized = (delegate* unmanaged<int*, int>)Export("MPI_Initialized");
        _finalized = (delegate* unmanaged<int*, int>)Export("MPI_Finalized");
        _finalize = (delegate* unmanaged<int>)Export("MPI_Finalize");
        _getLibraryVersion = (delegate* unmanaged<byte*, int*, int>)Export("MPI_Get_library_version");
    }

    /// <summary>The file that was loaded.</summary>
    public string Path { get; }

    /// <summary>The ABI family, told apart by the exports of the library.</summary>
    public MpiAbi Abi { get; }

    /// <summary>The native library handle.</summary>
    protected nint Handle { get; }

    /// <summary>
    /// Loads <paramref name="path"/> (a file or a soname for the dynamic loader) and binds it with the ABI its exports show:
    /// a library exporting <c>ompi_mpi_comm_world</c> is Open MPI, any other library exporting <c>MPI_Init_thread</c> is
    /// taken to follow the MPICH ABI.
    /// </summary>
    public static MpiLibrary Load(string path)
    {
        nint handle = LoadGlobal(path);
        if (!NativeLibrary.TryGetExport(handle, "MPI_Init_thread", out _))
            throw new MpiException($"{path} does not export MPI_Init_thread; it is not an MPI library (set L2L_MPI_LIBRARY to the libmpi of your MPI).");
        return NativeLibrary.TryGetExport(handle, "ompi_mpi_comm_world", out _)
            ? new OpenMpiLibrary(path, handle)
            : new MpichLibrary(path, handle);
    }

    /// <summary>The library's own version line (MPI_Get_library_version), first line only.</summary>
    public string Version()
    {
        var buffer = new byte[8192]; // MPI_MAX_LIBRARY_VERSION_STRING is 256 in Open MPI, 8192 in MPICH
        int length = 0;
        fixed (byte* b = buffer) Check(_getLibraryVersion(b, &length), "MPI_Get_library_version");
        string text = Encoding.UTF8.GetString(buffer, 0, Math.Clamp(length, 0, buffer.Length)).TrimEnd('\0', '\n', ' ');
        int newline = text.IndexOf('\n');
        return (newline >= 0 ? text[..newline] : text).Trim();
    }

    internal int InitThread(int required)
    {
        int provided = 0;
        Check(_initThread(null, null, required, &provided), "MPI_Init_thread");
        return provided;
    }

    internal bool IsInitialized() { int flag; Check(_initialized(&flag), "MPI_Initialized"); return flag != 0; }

    internal bool IsFinalized() { int flag; Check(_finalized(&flag), "MPI_Finalized"); return flag != 0; }

    internal void FinalizeMpi() => Check(_finalize(), "MPI_Finalize");

    internal abstract int CommWorldRank();

    internal abstract int CommWorldSize();

    internal abstract void Barrier();

    /// <summary>MPI_Alltoall of floats on MPI_COMM_WORLD: <paramref name="count"/> floats to and from each rank.</summary>
    internal abstract void AlltoallFloat(float* send, float* receive, int count);

    /// <summary>MPI_Allgather of floats on MPI_COMM_WORLD; a null <paramref name="send"/> means MPI_IN_PLACE.</summary>
    internal abstract void AllgatherFloat(float* send, float* receive, int count);

    internal abstract void BroadcastBytes(byte* buffer, int count, int root);

    internal abstract void Abort(int errorCode);

    private protected void* Export(string name) => (void*)NativeLibrary.GetExport(Handle, name);

    internal static void Check(int rc, string call)
    {
        if (rc != 0) throw new MpiException($"{call} failed with MPI error code {rc}.");
    }

    // Open MPI loads its transport components with dlopen and they resolve symbols of libmpi itself, so libmpi must be
    // loaded RTLD_GLOBAL (NativeLibrary.Load uses RTLD_LOCAL).
    private static nint LoadGlobal(string path)
    {
        if (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS())
        {
            const int RtldNow = 2;
            int global = OperatingSystem.IsLinux() ? 0x100 : 0x8;
            fixed (byte* p = Encoding.UTF8.GetBytes(path + "\0"))
            {
                nint h = dlopen(p, RtldNow | global);
                if (h != 0) return h;
            }
            nint error = dlerror();
            string why = error == 0 ? "unknown error" : Marshal.PtrToStringUTF8(error) ?? "unknown error";
            throw new MpiException($"Cannot load the MPI library {path}: {why}. Install it, or set L2L_MPI_LIBRARY to its path.");
        }
        try { return NativeLibrary.Load(path); }
        catch (DllNotFoundException e) { throw new MpiException($"Cannot load the MPI library {path}: {e.Message}"); }
    }

    [DllImport("libc", EntryPoint = "dlopen")]
    private static extern nint dlopen(byte* file, int mode);

    [DllImport("libc", EntryPoint = "dlerror")]
    private static extern nint dlerror();
}

/// <summary>Open MPI's ABI: handles are the addresses of exported predefined objects, resolved once at load.</summary>
internal sealed unsafe class OpenMpiLibrary : MpiLibrary
{
    private static readonly nint InPlace = 1; // MPI_IN_PLACE in Open MPI's mpi.h
    private readonly nint _commWorld, _float, _byte;
    private readonly delegate* unmanaged<nint, int*, int> _commRank, _commSize;
    private readonly delegate* unmanaged<nint, int> _barrier;
    private readonly delegate* unmanaged<void*, int, nint, void*, int, nint, nint, int> _alltoall, _allgather;
    private readonly delegate* unmanaged<void*, int, nint, int, nint, int> _bcast;
    private readonly delegate* unmanaged<nint, int, int> _abort;

    public OpenMpiLibrary(string path, nint handle) : base(path, handle, MpiAbi.OpenMpi)
    {
        _commWorld = (nint)Export("ompi_mpi_comm_world");
        _float = (nint)Export("ompi_mpi_float");
        _byte = (nint)Export("ompi_mpi_byte");
        _commRank = (delegate* unmanaged<nint, int*, int>)Export("MPI_Comm_rank");
        _commSize = (delegate* unmanaged<nint, int*, int>)Export("MPI_Comm_size");
        _barrier = (delegate* unmanaged<nint, int>)Export("MPI_Barrier");
        _alltoall = (delegate* unmanaged<void*, int, nint, void*, int, nint, nint, int>)Export("MPI_Alltoall");
        _allgather = (delegate* unmanaged<void*, int, nint, void*, int, nint, nint, int>)Export("MPI_Allgather");
        _bcast = (delegate* unmanaged<void*, int, nint, int, nint, int>)Export("MPI_Bcast");
        _abort = (delegate* unmanaged<nint, int, int>)Export("MPI_Abort");
    }

    internal override int CommWorldRank() { int r; Check(_commRank(_commWorld, &r), "MPI_Comm_rank"); return r; }

    internal override int CommWorldSize() { int s; Check(_commSize(_commWorld, &s), "MPI_Comm_size"); return s; }

    internal override void Barrier() => Check(_barrier(_commWorld), "MPI_Barrier");

    internal override void AlltoallFloat(float* send, float* receive, int count) =>
        Check(_alltoall(send, count, _float, receive, count, _float, _commWorld), "MPI_Alltoall");

    internal override void AllgatherFloat(float* send, float* receive, int count) =>
        Check(_allgather(send == null ? (void*)InPlace : send, count, _float, receive, count, _float, _commWorld), "MPI_Allgather");

    internal override void BroadcastBytes(byte* buffer, int count, int root) =>
        Check(_bcast(buffer, count, _byte, root, _commWorld), "MPI_Bcast");

    internal override void Abort(int errorCode) => _abort(_commWorld, errorCode);
}

/// <summary>The MPICH ABI: handles are the integer constants of MPICH's mpi.h (shared by Intel MPI, Cray MPICH, MVAPICH).</summary>
internal sealed unsafe class MpichLibrary : MpiLibrary
{
    private static readonly nint InPlace = -1; // MPI_IN_PLACE in MPICH's mpi.h
    private readonly delegate* unmanaged<int, int*, int> _commRank, _commSize;
    private readonly delegate* unmanaged<int, int> _barrier;
    private readonly delegate* unmanaged<void*, int, int, void*, int, int, int, int> _alltoall, _allgather;
    private readonly delegate* unmanaged<void*, int, int, int, int, int> _bcast;
    private readonly delegate* unmanaged<int, int, int> _abort;

    public MpichLibrary(string path, nint handle) : base(path, handle, MpiAbi.Mpich)
    {
        _commRank = (delegate* unmanaged<int, int*, int>)Export("MPI_Comm_rank");
        _commSize = (delegate* unmanaged<int, int*, int>)Export("MPI_Comm_size");
        _barrier = (delegate* unmanaged<int, int>)Export("MPI_Barrier");
        _alltoall = (delegate* unmanaged<void*, int, int, void*, int, int, int, int>)Export("MPI_Alltoall");
        _allgather = (delegate* unmanaged<void*, int, int, void*, int, int, int, int>)Export("MPI_Allgather");
        _bcast = (delegate* unmanaged<void*, int, int, int, int, int>)Export("MPI_Bcast");
        _abort = (delegate* unmanaged<int, int, int>)Export("MPI_Abort");
    }

    internal override int CommWorldRank() { int r; Check(_commRank(MpichHandles.CommWorld, &r), "MPI_Comm_rank"); return r; }

    internal override int CommWorldSize() { int s; Check(_commSize(MpichHandles.CommWorld, &s), "MPI_Comm_size"); return s; }

    internal override void Barrier() => Check(_barrier(MpichHandles.CommWorld), "MPI_Barrier");

    internal override void AlltoallFloat(float* send, float* receive, int count) =>
        Check(_alltoall(send, count, MpichHandles.Float, receive, count, MpichHandles.Float, MpichHandles.CommWorld), "MPI_Alltoall");

    internal override void AllgatherFloat(float* send, float* receive, int count) =>
        Check(_allgather(send == null ? (void*)InPlace : send, count, MpichHandles.Float, receive, count, MpichHandles.Float, MpichHandles.CommWorld), "MPI_Allgather");

    internal override void BroadcastBytes(byte* buffer, int count, int root) =>
        Check(_bcast(buffer, count, MpichHandles.Byte, root, MpichHandles.CommWorld), "MPI_Bcast");

    internal override void Abort(int errorCode) => _abort(MpichHandles.CommWorld, errorCode);
}

/// <summary>The predefined handles of the MPICH ABI, as MPICH's mpi.h defines them (the tests compare them with the installed header).</summary>
public static class MpichHandles
{
    /// <summary>MPI_COMM_WORLD.</summary>
    public const int CommWorld = 0x44000000;

    /// <summary>MPI_FLOAT.</summary>
    public const int Float = 0x4c00040a;

    /// <summary>MPI_BYTE.</summary>
    public const int Byte = 0x4c00010d;

    /// <summary>MPI_SUM (unused: sums are formed locally in rank order; kept so the header check covers it).</summary>
    public const int Sum = 0x58000003;
}

/// <summary>An MPI call failed or no usable MPI library was found.</summary>
public sealed class MpiException(string message) : Exception(message);

// Moving test arrays to and from tracked device buffers.
using ILGPU;
using ILGPU.Runtime;
using L2L.Backends;

namespace L2L.TestSupport;

/// <summary>Helpers that upload and download test data through the backend's memory tracker.</summary>
public static class DeviceIO
{
    /// <summary>Allocates a tracked buffer holding <paramref name="data"/>.</summary>
    public static DeviceBuffer<T> Upload<T>(this Backend backend, T[] data, string name = "test") where T : unmanaged
    {
        var buffer = backend.Allocate<T>(data.Length, MemoryCategory.Other, name);
        if (data.Length > 0)
            buffer.View.CopyFromCPU(backend.ComputeStream, data);
        backend.ComputeStream.Synchronize();
        return buffer;
    }

    /// <summary>Allocates a zeroed tracked buffer.</summary>
    public static DeviceBuffer<T> Zeros<T>(this Backend backend, long length, string name = "test") where T : unmanaged
    {
        var buffer = backend.Allocate<T>(length, MemoryCategory.Other, name);
        if (length > 0)
            buffer.View.MemSetToZero(backend.ComputeStream);
        backend.ComputeStream.Synchronize();
        return buffer;
    }

    /// <summary>Waits for the compute stream and copies the buffer back.</summary>
    public static T[] Download<T>(this Backend backend, DeviceBuffer<T> buffer) where T : unmanaged
    {
        backend.ComputeStream.Synchronize();
        var result = new T[buffer.Length];
        if (result.Length > 0)
            buffer.View.CopyToCPU(backend.ComputeStream, result);
        backend.ComputeStream.Synchronize();
        return result;
    }
}
